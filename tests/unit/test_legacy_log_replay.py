"""A ledger log written before exact odds (decimal odds in integer hundredths,
fractional quotes rounded down) replays to the very state that code folded it
into: same balances, bets and markets, field by field.

`fixtures/legacy_log.msgpack` holds the log's entries (each an encoded event
batch, as the wire codec wrote them) and, under `expected`, the accounts, bets
and markets the code of the time held after applying them. It covers
deposits, withdrawals and adjustments, singles and accumulators (one priced
from a rounded-down 13/8), price changes under each policy, a feed batch,
held in-play bets released and rejected, a dead heat, a settle / resettle /
rollback / settle sequence, a windowed void and a whole-market void.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from ironbook.core import (
    apply,
    check_invariants,
    decode_events,
    new_state,
    restore_snapshot,
    snapshot_bytes,
)
from ironbook.core.odds import Price, from_hundredths, payout_minor

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_log.msgpack"


def _replayed() -> tuple[Any, dict[str, Any]]:
    fixture = msgspec.msgpack.decode(FIXTURE.read_bytes())
    state = new_state()
    for batch in fixture["batches"]:
        for event in decode_events(batch):
            apply(state, event)
    return state, fixture["expected"]


def _odds(odds: int) -> Price:
    return from_hundredths(odds)


def test_the_old_log_replays_to_the_same_balances() -> None:
    state, expected = _replayed()
    assert check_invariants(state) == []
    assert set(state.accounts) == set(expected["accounts"])
    for account_id, old in expected["accounts"].items():
        account = state.accounts[account_id]
        # Account: [id, kind, balance, opened, excluded until, limits, deposits]
        assert account.kind == old[1], account_id
        assert account.balance_minor == old[2], account_id
        assert account.opened_ms == old[3], account_id
        assert [list(d) for d in account.deposits] == old[6], account_id
    assert state.next_bet_number == expected["next_bet_number"]
    assert state.events_applied == expected["events_applied"]


def test_the_old_log_replays_to_the_same_bets() -> None:
    state, expected = _replayed()
    assert list(state.bets) == list(expected["bets"])
    for bet_id, old in expected["bets"].items():
        bet = state.bets[bet_id]
        # Bet: [id, account, stake, legs, potential payout, placed, request,
        # status, payout, price change, reject code]
        assert bet.account_id == old[1]
        assert bet.stake_minor == old[2]
        assert bet.potential_payout_minor == old[4]
        assert bet.placed_ms == old[5]
        assert bet.request_id == old[6]
        assert bet.status == old[7], bet_id
        assert bet.payout_minor == old[8], bet_id
        assert bet.price_change == old[9]
        assert bet.reject_code == old[10]
        assert len(bet.legs) == len(old[3])
        for leg, old_leg in zip(bet.legs, old[3], strict=True):
            # PlacedLeg: [market, selection, odds (hundredths), outcome, dead heat, cancelled]
            assert (leg.market_id, leg.selection_id) == (old_leg[0], old_leg[1])
            assert leg.odds == _odds(old_leg[2])
            assert (leg.outcome, leg.dead_heat, leg.cancelled) == tuple(old_leg[3:6])
        assert bet.potential_payout_minor == payout_minor(
            bet.stake_minor, [leg.odds for leg in bet.legs]
        )


def test_the_old_log_replays_to_the_same_markets() -> None:
    state, expected = _replayed()
    assert list(state.markets) == list(expected["markets"])
    for market_id, old in expected["markets"].items():
        market = state.markets[market_id]
        # Market: [id, event, name, status, selections, in play, delay,
        # bet ids, winners, producer, max liability]
        assert (market.event_id, market.name, market.status) == tuple(old[1:4])
        assert (market.in_play, market.bet_delay_s) == tuple(old[5:7])
        assert market.bet_ids == old[7]
        assert market.winners == old[8]
        assert market.producer == old[9]
        assert market.max_liability_minor == old[10]
        assert market.ladder.kind == "exchange"
        assert list(market.selections) == list(old[4])
        for selection_id, old_selection in old[4].items():
            selection = market.selections[selection_id]
            # Selection: [id, name, odds (hundredths), liability]
            assert selection.name == old_selection[1]
            assert selection.odds == _odds(old_selection[2])
            assert selection.liability_minor == old_selection[3]


def test_a_snapshot_with_hundredths_restores_with_exact_prices() -> None:
    state, _ = _replayed()
    # Nor had the code of the time archiving: no final times, nothing queued.
    state.archive_queue.clear()
    for market in state.markets.values():
        market.final_ms = None
    raw = msgspec.msgpack.decode(snapshot_bytes(state))
    for market in raw[2].values():
        market[:] = market[:11]  # no ladder or place terms yet
        for selection in market[4].values():
            numerator, denominator, _ = selection[2]
            selection[2] = 100 * (numerator + denominator) // denominator
    for bet in raw[3].values():
        for leg in bet[3]:
            numerator, denominator, _ = leg[2]
            leg[2] = 100 * (numerator + denominator) // denominator
    restored = restore_snapshot(msgspec.msgpack.encode(raw))
    assert snapshot_bytes(restored) == snapshot_bytes(state)
