"""Archiving: markets and bets that are history leave the state.

A settled market and its bets are history once nothing can change them any
more: the market's latest result is older than the resettlement window (no
resettlement, rollback or void is accepted after it) and every bet on it is
final. They would otherwise stay in every replica's memory, in every
snapshot, hash and restore, forever. So once a market's latest result is
older than `bet_retention_ms` (longer than the resettlement window), the
leader archives it: `ArchiveSettled` (sent by the leader itself, like
`ReleaseBets`) decides a `SettledArchived` event that removes the market and
its bets from the state and carries their final views, so the log keeps
them and the read model serves them from then on. The state then grows with
open exposure, active accounts and the last retention window's results, not
with history.

The state keeps an archive queue, sorted: (due ms, market id) for every
final result, due `bet_retention_ms` after it. A market is archived
with its bets only when every one of those bets is final and every market
each of them has a leg on is past retention too, so a bet in the state
always has all its markets in the state. A market that must wait is
deferred: queued again for when the latest market holding it back (one an
accumulator on it has a leg on, resulted more recently) is past retention
too, or one retention window later while such a market is still unresulted.

Work per command is bounded: at most `MAX_ARCHIVED` markets and bets. A
market with more bets is archived over several commands, its bet ids walked
from the front (`LedgerState.archiving` names it; nothing can change its
bets meanwhile, so the judgement made at its first command stands).

Everything is decided by log time (`now_ms`) from the replicated state, so
replay is deterministic and a new leader carries on where the old one was.
"""

from __future__ import annotations

import bisect

from ironbook.core import commands as c
from ironbook.core import events as e
from ironbook.core.outcomes import Accepted
from ironbook.core.queries import bet_view, market_view
from ironbook.core.state import LedgerState, Market

MAX_ARCHIVED = 500
"""Markets plus bets one `SettledArchived` removes: about 50 KB of views."""

FINAL_MARKET = frozenset({"settled", "voided"})
FINAL_BET = frozenset({"won", "lost", "void", "rejected", "cashed_out"})


def archive_due(state: LedgerState, now_ms: int) -> bool:
    """Whether an `ArchiveSettled` decided at `now_ms` would archive (or drop
    a stale queue entry): the oldest queue entry is due."""
    queue = state.archive_queue
    return bool(queue) and queue[0][0] <= now_ms


def resettle_window_closed(state: LedgerState, market: Market, now_ms: int) -> bool:
    """A final market whose latest result is older than the resettlement
    window: nothing may result it again."""
    final_ms = market.final_ms
    return (
        market.status in FINAL_MARKET
        and final_ms is not None
        and now_ms > final_ms + state.config.resettle_window_ms
    )


def archive_settled(state: LedgerState, cmd: c.ArchiveSettled, now_ms: int) -> Accepted:
    retention_ms = state.config.bet_retention_ms
    consumed = 0
    markets: list[e.MarketView] = []
    bets: list[e.BetView] = []
    deferred: list[tuple[int, str]] = []
    taken: set[str] = set()
    """Bets on two markets archived by this one decision are listed once."""
    judged: set[str] = set()
    """A market resulted twice at one log time has two live queue entries:
    the second is stale once the first is judged."""
    continued, walked = "", 0
    for due_ms, market_id in state.archive_queue:
        if due_ms > now_ms or len(markets) + len(bets) + len(deferred) >= MAX_ARCHIVED:
            break
        consumed += 1
        market = state.markets.get(market_id)
        if (
            market is None
            or market.status not in FINAL_MARKET
            or market.final_ms is None
            or due_ms < market.final_ms + retention_ms
            or market_id in judged
        ):
            continue  # archived already, or resulted again since (a later entry stands)
        judged.add(market_id)
        if market_id != state.archiving:
            again_ms = _held_back_until(state, market, now_ms, retention_ms)
            if again_ms is not None:
                deferred.append((again_ms, market_id))
                continue
        budget = MAX_ARCHIVED - len(markets) - len(bets) - len(deferred)
        walked = 0
        for bet_id in market.bet_ids:
            if budget == 0:
                break
            walked += 1
            bet = state.bets.get(bet_id)
            if bet is not None and bet_id not in taken:
                taken.add(bet_id)
                bets.append(bet_view(bet))
                budget -= 1
        if walked < len(market.bet_ids):
            consumed -= 1  # it stays at the head until its last bet is archived
            continued = market_id
            break
        markets.append(market_view(state, market))
        walked = 0
    reply = e.ArchiveReply(markets=len(markets), bets=len(bets))
    if not consumed and not continued:
        return Accepted(events=(), result=reply)
    event = e.SettledArchived(
        request_id=cmd.request_id,
        at_ms=now_ms,
        consumed=consumed,
        markets=tuple(markets),
        bets=tuple(bets),
        deferred=tuple(deferred),
        continued=continued,
        walked=walked,
        actor="" if cmd.principal is None else cmd.principal.subject,
    )
    return Accepted(events=(event,), result=reply)


def _held_back_until(
    state: LedgerState, market: Market, now_ms: int, retention_ms: int
) -> int | None:
    """None if every bet on the market is final with every market it has a
    leg on past retention; else when to look again: when the latest of those
    markets is past retention, or a retention window from now while one of
    them has no final result (or a bet is still live)."""
    markets = state.markets
    horizon_ms = now_ms - retention_ms
    again_ms: int | None = None
    for bet_id in market.bet_ids:
        bet = state.bets.get(bet_id)
        if bet is None:
            continue  # archived with another of its markets
        if bet.status not in FINAL_BET:
            return now_ms + retention_ms
        for leg in bet.legs:
            leg_market = markets[leg.market_id]
            final_ms = leg_market.final_ms
            if leg_market.status not in FINAL_MARKET or final_ms is None:
                return now_ms + retention_ms
            if final_ms > horizon_ms:
                again_ms = max(again_ms or 0, final_ms + retention_ms)
    return again_ms


def apply_archived(state: LedgerState, event: e.SettledArchived) -> None:
    """`apply`'s part."""
    bets = state.bets
    for view in event.bets:
        del bets[view.bet_id]
    markets = state.markets
    for market in event.markets:
        del markets[market.market_id]
    queue = state.archive_queue
    del queue[: event.consumed]
    for entry in event.deferred:
        bisect.insort(queue, entry)
    if event.continued:
        del markets[event.continued].bet_ids[: event.walked]
    state.archiving = event.continued
    state.archived_markets += len(event.markets)
    state.archived_bets += len(event.bets)
