"""Queries: reads of the ledger state, decided by the leader like commands.

A query's decision is `Accepted(events=(), result=<view>)`: no events, so no
log write. The leader answers an event-less outcome only after every batch
decided before it is acknowledged, so a read sees every write acknowledged
before it was sent (linearizable) without costing an append.

Every query does bounded work on the leader's loop: pages hold at most
`MAX_PAGE` items and a bet listing inspects at most `MAX_BET_SCAN` bets per
call (a sparse account gets a short page and a cursor to continue).
"""

from __future__ import annotations

from typing import Literal

from ironbook.core import views as v
from ironbook.core.cashout import (
    cash_out_refusal,
    cash_out_stake_refusal,
    cash_out_value_minor,
    quote_id,
)
from ironbook.core.commands import Command
from ironbook.core.outcomes import Accepted
from ironbook.core.outcomes import RejectionCode as R
from ironbook.core.partitioning import partition_of
from ironbook.core.state import Bet, LedgerState, Market

MAX_PAGE = 200
MAX_BET_SCAN = 5_000
UNKNOWN_BET = R.UNKNOWN_BET
INVALID_CURSOR = "invalid_cursor"

BetStatusFilter = Literal["open", "won", "lost", "void", "pending", "rejected", "cashed_out"]
MarketStatusFilter = Literal["open", "suspended", "closed", "settling", "settled", "voided"]


class GetAccount(Command, frozen=True, tag="get_account/1"):
    account_id: str


class ListAccountBets(Command, frozen=True, tag="list_account_bets/1"):
    """An account's bets in placement order, `limit` at most, after the bet id
    `after` (a cursor from the previous page)."""

    account_id: str
    status: BetStatusFilter | None = None
    after: str | None = None
    limit: int = 50


class GetBet(Command, frozen=True, tag="get_bet/1"):
    bet_id: str


class QuoteCashOut(Command, frozen=True, tag="quote_cash_out/1"):
    """What cashing out `stake_minor` (per part; None = all) of a bet pays now."""

    account_id: str
    bet_id: str
    stake_minor: int | None = None


class GetMarket(Command, frozen=True, tag="get_market/1"):
    market_id: str


class ListMarkets(Command, frozen=True, tag="list_markets/1"):
    status: MarketStatusFilter | None = None
    after: str | None = None
    limit: int = 50


class GetFeedCursor(Command, frozen=True, tag="get_feed_cursor/1"):
    """Where a feed producer stands in this partition: resume after `cursor`."""

    producer: str


AnyQuery = (
    GetAccount | ListAccountBets | GetBet | QuoteCashOut | GetMarket | ListMarkets | GetFeedCursor
)


def query_partition(query: AnyQuery, partitions: int) -> int:
    """Which partition answers `query`. Markets live in every partition (any
    one will do: partition 0); a bet id names the partition that placed it."""
    if isinstance(query, GetAccount | ListAccountBets):
        return partition_of(query.account_id, partitions)
    if isinstance(query, GetBet | QuoteCashOut):
        parsed = _parse_bet_id(query.bet_id)
        if parsed is not None and parsed[0] < partitions:
            return parsed[0]
    return 0


def _parse_bet_id(bet_id: str) -> tuple[int, int] | None:
    """`B<partition>-<number>` -> (partition, number)."""
    head, dash, tail = bet_id[1:].partition("-")
    if not bet_id.startswith("B") or not dash:
        return None
    if not (head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit()):
        return None
    if len(head) > 6 or len(tail) > 18:
        return None
    return int(head), int(tail)


def _refuse(code: str, message: str) -> Accepted:
    return Accepted(events=(), result=v.ReadRefusal(code=code, message=message))


def _account_view(state: LedgerState, account_id: str, now_ms: int) -> v.AccountView | None:
    account = state.accounts.get(account_id)
    if account is None or account.kind != "player":
        return None
    limits: list[v.LimitView] = []
    for period in ("day", "week", "month"):
        limit = account.limits.get(period)
        if limit is None:
            continue
        pending = limit.pending
        if pending is not None and now_ms >= pending.effective_ms:
            limits.append(v.LimitView(period=period, limit_minor=pending.limit_minor))
            continue
        limits.append(
            v.LimitView(
                period=period,
                limit_minor=limit.limit_minor,
                pending_limit_minor=pending.limit_minor if pending else None,
                pending_effective_ms=pending.effective_ms if pending else None,
            )
        )
    return v.AccountView(
        account_id=account.account_id,
        balance_minor=account.balance_minor,
        currency=state.config.currency,
        status="self_excluded" if now_ms < account.excluded_until_ms else "active",
        excluded_until_ms=account.excluded_until_ms,
        opened_ms=account.opened_ms,
        limits=tuple(limits),
    )


def bet_view(bet: Bet) -> v.BetView:
    return v.BetView(
        bet_id=bet.bet_id,
        account_id=bet.account_id,
        stake_minor=bet.stake_minor,
        legs=tuple(
            v.LegView(
                market_id=leg.market_id,
                selection_id=leg.selection_id,
                odds=leg.odds,
                outcome=leg.outcome,
                dead_heat=leg.dead_heat,
            )
            for leg in bet.legs
        ),
        potential_payout_minor=bet.potential_payout_minor,
        status=bet.status,
        payout_minor=bet.payout_minor,
        placed_ms=bet.placed_ms,
        reject_code=bet.reject_code,
        each_way=bet.each_way,
        cashed_out_minor=bet.cashed_out_minor,
    )


def _market_status(state: LedgerState, market: Market) -> MarketStatusFilter:
    """The status a client sees: an open market of a producer that is down
    takes no bets, so it shows as suspended."""
    if market.status == "open" and market.producer and market.producer in state.producers_down:
        return "suspended"
    return market.status


def market_view(state: LedgerState, market: Market) -> v.MarketView:
    settlement = state.settlements.get(market.market_id)
    return v.MarketView(
        market_id=market.market_id,
        event_id=market.event_id,
        name=market.name,
        status=_market_status(state, market),
        in_play=market.in_play,
        bet_delay_s=market.bet_delay_s,
        selections=tuple(
            v.SelectionView(selection_id=s.selection_id, name=s.name, odds=s.odds)
            for s in market.selections.values()
        ),
        winners=tuple(market.winners),
        producer=market.producer,
        producer_down=bool(market.producer) and market.producer in state.producers_down,
        max_liability_minor=market.max_liability_minor,
        ladder=market.ladder,
        place_terms=market.place_terms,
        result_done_bets=settlement.cursor if settlement else 0,
        result_total_bets=settlement.total if settlement else 0,
    )


def _valid_limit(limit: int) -> bool:
    return 1 <= limit <= MAX_PAGE


def get_account(state: LedgerState, query: GetAccount, now_ms: int) -> Accepted:
    view = _account_view(state, query.account_id, now_ms)
    if view is None:
        return _refuse(R.UNKNOWN_ACCOUNT, f"no account {query.account_id!r}")
    return Accepted(events=(), result=view)


def list_account_bets(state: LedgerState, query: ListAccountBets, now_ms: int) -> Accepted:
    account = state.accounts.get(query.account_id)
    if account is None or account.kind != "player":
        return _refuse(R.UNKNOWN_ACCOUNT, f"no account {query.account_id!r}")
    if not _valid_limit(query.limit):
        return _refuse(INVALID_CURSOR, f"limit must be 1..{MAX_PAGE}")
    partition = state.config.partition
    start = 1
    if query.after is not None:
        parsed = _parse_bet_id(query.after)
        if parsed is None or parsed[0] != partition:
            return _refuse(INVALID_CURSOR, f"{query.after!r} is not a cursor of this listing")
        start = parsed[1] + 1
    # Bets are numbered densely per partition (archived ones are gone from
    # the state), so a page is a bounded walk over bet numbers rather than a
    # scan of every bet.
    end = min(state.next_bet_number, start + MAX_BET_SCAN)
    found: list[v.BetView] = []
    last_seen = start - 1
    for number in range(start, end):
        last_seen = number
        bet = state.bets.get(f"B{partition}-{number}")
        if bet is None or bet.account_id != query.account_id:
            continue
        if query.status is not None and bet.status != query.status:
            continue
        found.append(bet_view(bet))
        if len(found) == query.limit:
            break
    more = last_seen + 1 < state.next_bet_number
    next_after = f"B{partition}-{last_seen}" if more and last_seen >= start else None
    return Accepted(events=(), result=v.BetPage(bets=tuple(found), next_after=next_after))


def get_bet(state: LedgerState, query: GetBet, now_ms: int) -> Accepted:
    bet = state.bets.get(query.bet_id)
    if bet is None:
        return _refuse(UNKNOWN_BET, f"no bet {query.bet_id!r}")
    return Accepted(events=(), result=bet_view(bet))


def quote_cash_out(state: LedgerState, query: QuoteCashOut, now_ms: int) -> Accepted:
    bet = state.bets.get(query.bet_id)
    if bet is None:
        return _refuse(UNKNOWN_BET, f"no bet {query.bet_id!r}")
    refusal = cash_out_refusal(state, bet, query.account_id)
    stake_minor = bet.stake_minor if query.stake_minor is None else query.stake_minor
    if refusal is None:
        refusal = cash_out_stake_refusal(state, bet, stake_minor)
    if refusal is not None:
        return _refuse(refusal.code, refusal.message)
    amount_minor = cash_out_value_minor(state, bet, stake_minor)
    expires_ms = now_ms + state.config.cash_out_quote_ttl_ms
    quote = v.CashOutQuote(
        bet_id=bet.bet_id,
        quote_id=quote_id(bet, stake_minor, amount_minor, expires_ms),
        amount_minor=amount_minor,
        stake_minor=stake_minor,
        expires_ms=expires_ms,
    )
    return Accepted(events=(), result=quote)


def get_market(state: LedgerState, query: GetMarket, now_ms: int) -> Accepted:
    market = state.markets.get(query.market_id)
    if market is None:
        return _refuse(R.UNKNOWN_MARKET, f"no market {query.market_id!r}")
    return Accepted(events=(), result=market_view(state, market))


def list_markets(state: LedgerState, query: ListMarkets, now_ms: int) -> Accepted:
    if not _valid_limit(query.limit):
        return _refuse(INVALID_CURSOR, f"limit must be 1..{MAX_PAGE}")
    market_ids = list(state.markets)
    start = 0
    if query.after is not None:
        if query.after not in state.markets:
            return _refuse(INVALID_CURSOR, f"{query.after!r} is not a cursor of this listing")
        start = market_ids.index(query.after) + 1
    found: list[v.MarketView] = []
    index = start
    while index < len(market_ids) and len(found) < query.limit:
        market = state.markets[market_ids[index]]
        index += 1
        if query.status is None or _market_status(state, market) == query.status:
            found.append(market_view(state, market))
    next_after = market_ids[index - 1] if index < len(market_ids) and index > start else None
    return Accepted(events=(), result=v.MarketPage(markets=tuple(found), next_after=next_after))


def get_feed_cursor(state: LedgerState, query: GetFeedCursor, now_ms: int) -> Accepted:
    return Accepted(
        events=(),
        result=v.FeedCursorReply(
            producer=query.producer,
            cursor=state.feed_cursors.get(query.producer, 0),
            down=query.producer in state.producers_down,
        ),
    )
