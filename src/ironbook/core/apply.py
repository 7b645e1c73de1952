"""`apply`: fold one event into the state. The only code that mutates state.

`apply` trusts the event (the leader's `decide` judged it) but asserts the
invariants it can check cheaply: postings balance, no player goes negative.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from ironbook.core import events as e
from ironbook.core.archiving import FINAL_MARKET, apply_archived
from ironbook.core.commands import SelectionSpec
from ironbook.core.odds import Ladder, PlaceTerms, as_price
from ironbook.core.settlement import market_leg_result, market_place_result, result_maps
from ironbook.core.settling import record_slice
from ironbook.core.state import (
    LIMIT_WINDOWS_MS,
    Account,
    Bet,
    DepositLimit,
    LedgerState,
    Market,
    PendingLimit,
    PlacedLeg,
    PlacePart,
    Selection,
)

_LONGEST_LIMIT_WINDOW_MS = max(LIMIT_WINDOWS_MS.values())


class LedgerCorrupted(AssertionError):
    """An event that breaks a ledger invariant reached `apply`: a bug upstream."""


def apply(state: LedgerState, event: e.AnyEvent) -> None:
    _APPLIERS[type(event)](state, event)
    postings = event.postings
    if postings:
        accounts = state.accounts
        total = 0
        for account_id, amount_minor in postings:
            account = accounts[account_id]
            account.balance_minor += amount_minor
            total += amount_minor
            if account.balance_minor < 0 and account.kind == "player":
                raise LedgerCorrupted(f"{event.request_id}: {account_id} went negative")
        if total != 0:
            raise LedgerCorrupted(f"{event.request_id}: postings sum to {total}")
    state.now_ms = max(state.now_ms, event.at_ms)
    state.events_applied += 1
    reply = event.reply
    if reply is not None:
        _remember_reply(state, event.request_id, event.at_ms, reply)
    elif isinstance(event, e.SettledArchived):
        # The leader's housekeeping also ends expired idempotency memory on a
        # ledger that remembers no new replies meanwhile.
        _forget_expired_replies(state)


def _remember_reply(state: LedgerState, request_id: str, at_ms: int, reply: e.AnyReply) -> None:
    state.replies[request_id] = reply
    state.reply_order.append((at_ms, request_id))
    _forget_expired_replies(state)


def _forget_expired_replies(state: LedgerState) -> None:
    """Drop the replies older than the idempotency retention window."""
    replies = state.replies
    order = state.reply_order
    head = state.reply_order_head
    horizon_ms = state.now_ms - state.config.idempotency_retention_ms
    if head == len(order) or order[head][0] >= horizon_ms:
        return
    while head < len(order) and order[head][0] < horizon_ms:
        replies.pop(order[head][1], None)
        head += 1
    if head > 1024 and head * 2 > len(order):
        del order[:head]
        head = 0
    state.reply_order_head = head


def _account_opened(state: LedgerState, event: e.AccountOpened) -> None:
    state.accounts[event.account_id] = Account(
        account_id=event.account_id, kind="player", opened_ms=event.at_ms
    )


def _deposited(state: LedgerState, event: e.Deposited) -> None:
    deposits = state.accounts[event.account_id].deposits
    deposits.append((event.at_ms, event.amount_minor))
    horizon_ms = event.at_ms - _LONGEST_LIMIT_WINDOW_MS
    while deposits and deposits[0][0] <= horizon_ms:
        deposits.pop(0)
    state.next_transaction_number += 1


def _transaction(state: LedgerState, event: e.Withdrawn | e.BalanceAdjusted) -> None:
    state.next_transaction_number += 1


def _deposit_limits_set(state: LedgerState, event: e.DepositLimitsSet) -> None:
    limits = state.accounts[event.account_id].limits
    for change in event.changes:
        limit = limits.get(change.period)
        if limit is None:
            limit = limits[change.period] = DepositLimit()
        if limit.pending is not None and event.at_ms >= limit.pending.effective_ms:
            limit.limit_minor = limit.pending.limit_minor
        if change.effective_ms <= event.at_ms:
            limit.limit_minor = change.limit_minor
            limit.pending = None
        else:
            limit.pending = PendingLimit(
                limit_minor=change.limit_minor, effective_ms=change.effective_ms
            )


def _self_excluded(state: LedgerState, event: e.SelfExcluded) -> None:
    state.accounts[event.account_id].excluded_until_ms = event.until_ms


def _market_created(state: LedgerState, event: e.MarketCreated) -> None:
    _add_market(
        state,
        event.market_id,
        event.event_id,
        event.name,
        event.selections,
        event.in_play,
        event.bet_delay_s,
        event.producer,
        event.ladder,
        event.place_terms,
    )


def _add_market(
    state: LedgerState,
    market_id: str,
    event_id: str,
    name: str,
    selections: Iterable[SelectionSpec],
    in_play: bool,
    bet_delay_s: int,
    producer: str,
    ladder: Ladder | None = None,
    place_terms: PlaceTerms | None = None,
) -> None:
    state.markets[market_id] = Market(
        market_id=market_id,
        event_id=event_id,
        name=name,
        status="open",
        selections={
            spec.selection_id: Selection(
                selection_id=spec.selection_id, name=spec.name, odds=as_price(spec.odds)
            )
            for spec in selections
        },
        in_play=in_play,
        bet_delay_s=bet_delay_s,
        producer=producer,
        ladder=ladder or Ladder(),
        place_terms=place_terms,
    )


def _prices_updated(state: LedgerState, event: e.PricesUpdated) -> None:
    selections = state.markets[event.market_id].selections
    for price in event.prices:
        selections[price.selection_id].odds = as_price(price.odds)


def _market_status_changed(state: LedgerState, event: e.MarketStatusChanged) -> None:
    state.markets[event.market_id].status = event.status


def _bet_placed(state: LedgerState, event: e.BetPlaced) -> None:
    legs = tuple(
        [PlacedLeg(leg.market_id, leg.selection_id, as_price(leg.odds)) for leg in event.legs]
    )
    if event.place_terms:
        for placed_leg, terms in zip(legs, event.place_terms, strict=True):
            placed_leg.place = PlacePart(terms)
    bet = Bet(
        bet_id=event.bet_id,
        account_id=event.account_id,
        stake_minor=event.stake_minor,
        legs=legs,
        potential_payout_minor=event.potential_payout_minor,
        placed_ms=event.at_ms,
        request_id=event.request_id,
        status="pending" if event.release_ms else "open",
        price_change=event.price_change,
        each_way=event.each_way,
    )
    state.bets[event.bet_id] = bet
    state.next_bet_number += 1
    if event.release_ms:
        bisect.insort(state.pending_bets, (event.release_ms, event.bet_id))
    markets = state.markets
    liability_minor = event.potential_payout_minor - (
        2 * event.stake_minor if event.each_way else event.stake_minor
    )
    for leg in event.legs:
        market = markets[leg.market_id]
        market.bet_ids.append(event.bet_id)
        selection = market.selections[leg.selection_id]
        selection.liability_minor += liability_minor
        market.max_liability_minor = max(market.max_liability_minor, selection.liability_minor)


def _market_resulted(state: LedgerState, event: e.MarketResulted) -> None:
    market = state.markets[event.market_id]
    if event.placed_from_ms is None:
        final = event.slice_to >= event.slice_total
        market.status = event.status if final else "settling"
    winners, placed = result_maps(event.winners)
    market.winners = winners
    market.placed = placed
    cancel = event.placed_from_ms is not None
    touched: set[str] = set()
    unheld: set[str] = set()
    for outcome in event.bets:
        bet = state.bets[outcome.bet_id]
        was_held = bet.status == "pending"
        for leg in bet.legs:
            if was_held:
                # A held bet a cancel voids was never accepted: all of it is void.
                leg.cancelled = True
                leg.outcome, leg.dead_heat = "void", 1
                if leg.place is not None:
                    leg.place.outcome, leg.place.places_paid, leg.place.tied = "void", 1, 1
            elif leg.market_id == event.market_id:
                leg.cancelled = leg.cancelled or cancel
                leg.outcome, leg.dead_heat = market_leg_result(leg, event.kind, winners)
                if leg.place is not None:
                    leg.place.outcome, leg.place.places_paid, leg.place.tied = market_place_result(
                        leg, event.kind, winners, placed
                    )
        was_live = bet.status == "open" or was_held
        if was_live != (outcome.status == "open"):
            _shift_liability(state, bet, -bet.liability_minor if was_live else bet.liability_minor)
            touched.update(leg.market_id for leg in bet.legs)
        if was_held:
            unheld.add(bet.bet_id)
        bet.status = outcome.status
        bet.payout_minor = outcome.payout_minor
    if unheld:
        state.pending_bets = [item for item in state.pending_bets if item[1] not in unheld]
    recompute_max_liability(state, touched)
    record_slice(state, event)
    if event.slice_to >= event.slice_total:
        if market.status in FINAL_MARKET:
            # The latest final result: the resettlement window and the bet
            # retention count from here (an earlier queue entry is now stale).
            market.final_ms = max(state.now_ms, event.at_ms)
            state.archive_queue.append(
                (market.final_ms + state.config.bet_retention_ms, market.market_id)
            )
        else:
            market.final_ms = None  # rolled back: no final result any more


def _shift_liability(state: LedgerState, bet: Bet, delta_minor: int) -> None:
    markets = state.markets
    for leg in bet.legs:
        market = markets[leg.market_id]
        selection = market.selections[leg.selection_id]
        selection.liability_minor += delta_minor
        market.max_liability_minor = max(market.max_liability_minor, selection.liability_minor)


def recompute_max_liability(state: LedgerState, market_ids: Iterable[str]) -> None:
    """After bets leave a market (O(selections) per market, on paths that
    already walk bets, never on the bet path)."""
    for market_id in market_ids:
        market = state.markets[market_id]
        market.max_liability_minor = max(
            (selection.liability_minor for selection in market.selections.values()), default=0
        )


def _feed_applied(state: LedgerState, event: e.FeedApplied) -> None:
    markets = state.markets
    for item in event.markets:
        market = markets.get(item.market_id)
        if market is None:
            _add_market(
                state,
                item.market_id,
                item.event_id,
                item.name,
                item.selections,
                bool(item.in_play),
                item.bet_delay_s or 0,
                event.producer,
            )
            market = markets[item.market_id]
        if item.in_play is not None:
            market.in_play = item.in_play
        if item.bet_delay_s is not None:
            market.bet_delay_s = item.bet_delay_s
        if item.status is not None:
            market.status = item.status
        selections = market.selections
        for price in item.prices:
            selections[price.selection_id].odds = as_price(price.odds)
    state.feed_cursors[event.producer] = event.to_cursor


def _producer_status_changed(state: LedgerState, event: e.ProducerStatusChanged) -> None:
    if event.down:
        state.producers_down.setdefault(event.producer, event.at_ms)
    else:
        state.producers_down.pop(event.producer, None)


def _bets_released(state: LedgerState, event: e.BetsReleased) -> None:
    bets = state.bets
    released = len(event.accepted) + len(event.rejected)
    pending = state.pending_bets
    expected = {bet_id for _, bet_id in pending[:released]}
    if expected != {*event.accepted, *(bet_id for bet_id, _ in event.rejected)}:
        raise LedgerCorrupted(f"{event.request_id}: released bets are not the oldest held")
    del pending[:released]
    for bet_id in event.accepted:
        bets[bet_id].status = "open"
    touched: set[str] = set()
    for bet_id, code in event.rejected:
        bet = bets[bet_id]
        bet.status = "rejected"
        bet.reject_code = code
        _shift_liability(state, bet, -bet.liability_minor)
        touched.update(leg.market_id for leg in bet.legs)
    recompute_max_liability(state, touched)


def _bet_cashed_out(state: LedgerState, event: e.BetCashedOut) -> None:
    bet = state.bets[event.bet_id]
    liability_before_minor = bet.liability_minor
    bet.stake_minor = event.remaining_stake_minor
    bet.potential_payout_minor = event.potential_payout_minor
    bet.cashed_out_minor += event.amount_minor
    if not event.remaining_stake_minor:
        bet.status = "cashed_out"
    _shift_liability(state, bet, bet.liability_minor - liability_before_minor)
    recompute_max_liability(state, {leg.market_id for leg in bet.legs})


def _command_rejected(state: LedgerState, event: e.CommandRejected) -> None:
    pass


_APPLIERS: dict[type[e.Event], Callable[[LedgerState, Any], None]] = {
    e.AccountOpened: _account_opened,
    e.Deposited: _deposited,
    e.Withdrawn: _transaction,
    e.BalanceAdjusted: _transaction,
    e.DepositLimitsSet: _deposit_limits_set,
    e.SelfExcluded: _self_excluded,
    e.MarketCreated: _market_created,
    e.MarketCreatedV1: _market_created,
    e.PricesUpdated: _prices_updated,
    e.MarketStatusChanged: _market_status_changed,
    e.BetPlaced: _bet_placed,
    e.BetPlacedV1: _bet_placed,
    e.MarketResulted: _market_resulted,
    e.CommandRejected: _command_rejected,
    e.FeedApplied: _feed_applied,
    e.ProducerStatusChanged: _producer_status_changed,
    e.BetsReleased: _bets_released,
    e.BetCashedOut: _bet_cashed_out,
    e.SettledArchived: apply_archived,
}
