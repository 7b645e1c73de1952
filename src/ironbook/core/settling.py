"""Market results in slices: a settlement, void, resettlement or rollback of a
market with many bets is decided and logged a bounded slice at a time.

A slice walks at most `result_slice_bets` of the market's bets, and stops
earlier once its outcomes and postings reach about `result_slice_bytes`. Each
slice is one `MarketResulted` event in its own log entry, with its own
postings summing to zero, so no decide, apply or append of a result takes
longer than one slice's work, and other commands are decided between slices.

The first slice comes from the client's command and carries its reply. While
slices remain, the state keeps the result's progress (a `Settlement`: a cursor
over the market's bet ids) and the market shows `settling`; the leader sends a
`ContinueResult` for the cursor after each slice (`continuations`). Everything
a slice depends on is in the replicated state, so a new leader after a
failover continues from the last applied slice: each bet is resulted exactly
once.

Money is netted per player within a slice. What a slice takes back from a
player beyond the balance (a resettlement reversing spent winnings) is owed:
taken from that player's credits in later slices of the same result, and
written off by the house if still owed after the last slice. Without other
commands in between, a player's money therefore ends exactly as if the whole
result were netted at once, whatever the slice size.
"""

from __future__ import annotations

from ironbook.core import commands as c
from ironbook.core import events as e
from ironbook.core.commands import LEDGER_PRINCIPAL
from ironbook.core.outcomes import Accepted
from ironbook.core.settlement import Placings, evaluate_bet, result_maps
from ironbook.core.state import (
    HOUSE,
    STAKES_HELD,
    SYSTEM_PREFIX,
    Bet,
    LedgerState,
    Market,
    Settlement,
)

OUTCOME_BYTES = 16
"""Encoded size of a bet outcome besides its bet id (status, payout, framing)."""
POSTING_BYTES = 16
"""Encoded size of a posting besides its account id."""


def begin_result(
    state: LedgerState,
    cmd: c.Command,
    market: Market,
    kind: e.ResultKind,
    winners: tuple[c.Winner, ...],
    actor: str,
    reason: str,
    now_ms: int,
    window: tuple[int, int] | None = None,
) -> Accepted:
    """Decide the first slice of a result of every bet with a leg on
    `market`: reverse the money of any bet settled before, then pay the bet's
    new result (a rollback's is "open": nothing paid). With a `window` (a
    cancel), only the bets placed in [from, to) are voided, and the market
    keeps its status.

    Held in-play bets are not live yet: a result skips them (they are
    rejected at release, the market being no longer open), but a cancel voids
    the ones placed in its window, refunding their stakes."""
    status: e.MarketStatus
    if window is not None:
        status = market.status
    elif kind == "void":
        status = "voided"
    elif kind == "rollback":
        status = "closed"
    else:
        status = "settled"
    settlement = Settlement(
        request_id=cmd.request_id,
        kind=kind,
        status=status,
        winners=winners,
        actor=actor,
        reason=reason,
        window=window,
        cursor=0,
        total=len(market.bet_ids),
    )
    event = _slice(state, market, settlement, now_ms, first=True)
    return Accepted(events=(event,), result=event.reply or _no_change(market))


def continue_result(state: LedgerState, cmd: c.ContinueResult, now_ms: int) -> Accepted:
    """The next slice of the market's result in progress, if `cmd.cursor` is
    where it stands; else nothing (a repeated or stale continuation)."""
    market = state.markets[cmd.market_id]
    settlement = state.settlements.get(cmd.market_id)
    if settlement is None or settlement.cursor != cmd.cursor:
        return Accepted(events=(), result=_no_change(market))
    event = _slice(state, market, settlement, now_ms, first=False)
    return Accepted(events=(event,), result=_no_change(market))


def continuations(state: LedgerState) -> list[c.ContinueResult]:
    """One `ContinueResult` per result in progress, for its next slice."""
    return [
        c.ContinueResult(
            request_id=f"slice:{market_id}:{settlement.cursor}",
            market_id=market_id,
            cursor=settlement.cursor,
            principal=LEDGER_PRINCIPAL,
        )
        for market_id, settlement in state.settlements.items()
    ]


def record_slice(state: LedgerState, event: e.MarketResulted) -> None:
    """`apply`'s part: move the result's progress on by one slice (the bets
    and postings themselves are applied by the caller)."""
    market_id = event.market_id
    if event.slice_to >= event.slice_total:
        state.settlements.pop(market_id, None)
        return
    settlement = state.settlements.get(market_id)
    if settlement is None:
        window = None
        if event.placed_from_ms is not None and event.placed_to_ms is not None:
            window = (event.placed_from_ms, event.placed_to_ms)
        settlement = state.settlements[market_id] = Settlement(
            request_id=event.request_id,
            kind=event.kind,
            status=event.status,
            winners=event.winners,
            actor=event.actor,
            reason=event.reason,
            window=window,
            cursor=event.slice_from,
            total=event.slice_total,
        )
    settlement.cursor = event.slice_to
    settlement.bets_affected += len(event.bets)
    settlement.paid_minor += sum(
        amount for account_id, amount in event.postings if not account_id.startswith(SYSTEM_PREFIX)
    )
    owed = settlement.owed
    for account_id, amount_minor in event.owed:
        if amount_minor:
            owed[account_id] = amount_minor
        else:
            owed.pop(account_id, None)


def _no_change(market: Market) -> e.SettlementReply:
    return e.SettlementReply(
        market_id=market.market_id, status=market.status, bets_affected=0, paid_minor=0
    )


class _Walk:
    """What one slice's walk over the market's bets found."""

    __slots__ = ("held_delta", "next_index", "outcomes", "player_delta")

    def __init__(self, start: int) -> None:
        self.outcomes: list[e.BetOutcome] = []
        self.player_delta: dict[str, int] = {}
        """account -> the slice's net change for the player, before any owed."""
        self.held_delta = 0
        self.next_index = start


def _new_outcome(
    bet: Bet, market_id: str, settlement: Settlement, winners: dict[str, int], placed: Placings
) -> tuple[e.BetStatus, e.BetStatus, int] | None:
    """(old status as the money sees it, new status, new payout) of one bet
    under the result, or None if the result leaves it alone."""
    old_status = bet.status
    if old_status in ("rejected", "cashed_out"):
        # Out of the market's results for good: a cash-out stands.
        return None
    window = settlement.window
    if window is not None:
        if not window[0] <= bet.placed_ms < window[1]:
            return None
        if old_status == "pending":
            # Never accepted: the whole bet is void, its stake refunded.
            return "open", "void", bet.staked_minor
    elif old_status == "pending":
        return None
    new_status, new_payout = evaluate_bet(bet, market_id, settlement.kind, winners, placed)
    return old_status, new_status, new_payout


def _walk(state: LedgerState, market: Market, settlement: Settlement) -> _Walk:
    """Evaluate the slice's bets: at most `result_slice_bets` of them, fewer
    once their outcomes and postings reach `result_slice_bytes`."""
    config = state.config
    winners, placed = result_maps(settlement.winners)
    bet_ids = market.bet_ids
    walk = _Walk(settlement.cursor)
    stop = min(settlement.total, settlement.cursor + config.result_slice_bets)
    budget_bytes = config.result_slice_bytes
    used_bytes = 0
    while walk.next_index < stop and used_bytes < budget_bytes:
        bet = state.bets[bet_ids[walk.next_index]]
        walk.next_index += 1
        found = _new_outcome(bet, market.market_id, settlement, winners, placed)
        if found is None:
            continue
        old_status, new_status, new_payout = found
        walk.outcomes.append(
            e.BetOutcome(bet_id=bet.bet_id, status=new_status, payout_minor=new_payout)
        )
        used_bytes += len(bet.bet_id) + OUTCOME_BYTES
        delta = 0
        if old_status != "open":
            delta -= bet.payout_minor
            walk.held_delta += bet.staked_minor
        if new_status != "open":
            delta += new_payout
            walk.held_delta -= bet.staked_minor
        if delta:
            if bet.account_id not in walk.player_delta:
                walk.player_delta[bet.account_id] = 0
                used_bytes += len(bet.account_id) + POSTING_BYTES
            walk.player_delta[bet.account_id] += delta
    return walk


def _slice(
    state: LedgerState, market: Market, settlement: Settlement, now_ms: int, *, first: bool
) -> e.MarketResulted:
    walk = _walk(state, market, settlement)
    last = walk.next_index >= settlement.total
    postings: list[e.Posting] = []
    owed_changes: list[e.Posting] = []
    house_delta = -walk.held_delta
    net_paid_minor = 0
    owed = settlement.owed
    for account_id, raw_delta in walk.player_delta.items():
        balance_minor = state.accounts[account_id].balance_minor
        was_owed_minor = owed.get(account_id, 0)
        delta = raw_delta - was_owed_minor
        now_owed_minor = 0
        if balance_minor + delta < 0:
            now_owed_minor = -(balance_minor + delta)
            delta = -balance_minor
        if now_owed_minor != was_owed_minor:
            owed_changes.append((account_id, now_owed_minor))
        house_delta -= delta
        net_paid_minor += delta
        if delta:
            postings.append((account_id, delta))
    if walk.held_delta:
        postings.append((STAKES_HELD, walk.held_delta))
    if house_delta:
        postings.append((HOUSE, house_delta))
    written_off: list[e.Posting] = []
    if last:
        still_owed = {**owed, **dict(owed_changes)}
        written_off = [(account, amount) for account, amount in still_owed.items() if amount]
    reply = None
    if first:
        reply = e.SettlementReply(
            market_id=market.market_id,
            status=settlement.status if last else "settling",
            bets_affected=len(walk.outcomes),
            paid_minor=net_paid_minor,
        )
    window = settlement.window
    return e.MarketResulted(
        request_id=settlement.request_id,
        at_ms=now_ms,
        postings=tuple(postings),
        market_id=market.market_id,
        kind=settlement.kind,
        status=settlement.status,
        winners=settlement.winners,
        bets=tuple(walk.outcomes),
        written_off=tuple(written_off),
        actor=settlement.actor,
        reason=settlement.reason,
        reply=reply,
        placed_from_ms=window[0] if window else None,
        placed_to_ms=window[1] if window else None,
        slice_from=settlement.cursor,
        slice_to=walk.next_index,
        slice_total=settlement.total,
        owed=tuple(owed_changes),
    )
