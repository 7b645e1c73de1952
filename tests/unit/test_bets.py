"""Bet placement: singles, accumulators, price-change policies, every refusal."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    STAKES_HELD,
    LedgerConfig,
    SelectionPrice,
    SelfExclude,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    check_invariants,
    state_hash,
)
from ironbook.core.events import BetPlaced, CommandRejected
from ironbook.core.odds import Price, as_price
from ironbook.core.odds import from_hundredths as h


def make_ledger(**config: int) -> Ledger:
    ledger = Ledger(LedgerConfig(**config))
    ledger.open_account("alice", 10_000)
    ledger.create_market("m1", {"a": 250, "b": 300, "c": 500})
    ledger.create_market("m2", {"x": 200, "y": 180})
    ledger.create_market("m3", {"p": 150, "q": 400})
    return ledger


@pytest.fixture
def ledger() -> Ledger:
    return make_ledger()


def set_price(ledger: Ledger, market_id: str, selection_id: str, odds: int) -> None:
    ledger.ok(
        UpdatePrices(
            request_id=ledger.request_id(),
            market_id=market_id,
            prices=(SelectionPrice(selection_id=selection_id, odds=odds),),
        )
    )


def test_single(ledger: Ledger) -> None:
    reply = ledger.ok(ledger.bet_command("alice", 1_000, ("m1", "a", 250)))
    assert reply.status == "open"
    assert reply.odds == h(250)
    assert reply.potential_payout_minor == 2_500
    assert reply.balance_minor == 9_000
    event = ledger.log[-1]
    assert isinstance(event, BetPlaced)
    assert sorted(event.postings) == sorted([("alice", -1_000), (STAKES_HELD, 1_000)])
    bet = ledger.state.bets[reply.bet_id]
    assert (bet.status, bet.stake_minor, bet.account_id) == ("open", 1_000, "alice")
    assert ledger.balance("alice") == 9_000
    assert ledger.held() == 1_000
    assert ledger.state.markets["m1"].selections["a"].liability_minor == 1_500
    assert ledger.state.markets["m1"].bet_ids == [reply.bet_id]
    assert check_invariants(ledger.state) == []


def test_single_payout_rounds_down(ledger: Ledger) -> None:
    reply = ledger.ok(ledger.bet_command("alice", 333, ("m1", "a", 250)))
    assert reply.potential_payout_minor == 832


def test_bet_ids_are_unique(ledger: Ledger) -> None:
    ids = {ledger.bet("alice", 100, ("m1", "a", 250)) for _ in range(5)}
    assert len(ids) == 5


def test_accumulator(ledger: Ledger) -> None:
    reply = ledger.ok(
        ledger.bet_command("alice", 1_000, ("m1", "a", 250), ("m2", "x", 200), ("m3", "p", 150))
    )
    assert reply.potential_payout_minor == 7_500
    assert reply.odds == h(750)
    bet = ledger.state.bets[reply.bet_id]
    assert [(leg.market_id, leg.selection_id) for leg in bet.legs] == [
        ("m1", "a"),
        ("m2", "x"),
        ("m3", "p"),
    ]
    for market_id, selection_id in (("m1", "a"), ("m2", "x"), ("m3", "p")):
        market = ledger.state.markets[market_id]
        assert market.bet_ids == [reply.bet_id]
        assert market.selections[selection_id].liability_minor == 6_500
    assert check_invariants(ledger.state) == []


def test_accumulator_payout_rounds_down(ledger: Ledger) -> None:
    set_price(ledger, "m1", "a", 150)
    set_price(ledger, "m2", "x", 150)
    set_price(ledger, "m3", "p", 150)
    reply = ledger.ok(
        ledger.bet_command("alice", 100, ("m1", "a", 150), ("m2", "x", 150), ("m3", "p", 150))
    )
    assert reply.potential_payout_minor == 337  # 337.5
    assert reply.odds == Price(19, 8)  # exactly 3.375


def test_duplicate_selection(ledger: Ledger) -> None:
    command = ledger.bet_command("alice", 100, ("m1", "a", 250), ("m1", "a", 250))
    assert ledger.refused(command) == "duplicate_selection"


def test_related_legs(ledger: Ledger) -> None:
    command = ledger.bet_command("alice", 100, ("m2", "x", 200), ("m1", "a", 250), ("m1", "b", 300))
    assert ledger.refused(command) == "related_legs"


# Price-change policies.


@pytest.mark.parametrize(
    ("policy", "requested", "current", "accepted"),
    [
        ("none", 250, 250, 250),
        ("none", 250, 260, None),
        ("none", 250, 240, None),
        ("better", 250, 250, 250),
        ("better", 250, 260, 260),
        ("better", 250, 240, None),
        ("any", 250, 250, 250),
        ("any", 250, 260, 260),
        ("any", 250, 240, 240),
        ("any", 101, 1_000, 1_000),
    ],
)
def test_price_change_policy(
    ledger: Ledger, policy: str, requested: int, current: int, accepted: int | None
) -> None:
    set_price(ledger, "m1", "a", current)
    command = ledger.bet_command("alice", 1_000, ("m1", "a", requested), policy=policy)
    if accepted is None:
        assert ledger.refused(command) == "price_changed"
        assert ledger.state.bets == {}
        return
    reply = ledger.ok(command)
    assert reply.odds == h(accepted)
    assert reply.potential_payout_minor == 1_000 * accepted // 100
    [leg] = ledger.state.bets[reply.bet_id].legs
    assert leg.odds == h(accepted)
    event = ledger.log[-1]
    assert isinstance(event, BetPlaced)
    assert as_price(event.legs[0].odds) == h(accepted)


def test_better_policy_on_an_accumulator_takes_each_current_price(ledger: Ledger) -> None:
    set_price(ledger, "m1", "a", 300)
    reply = ledger.ok(
        ledger.bet_command("alice", 100, ("m1", "a", 250), ("m2", "x", 200), policy="better")
    )
    assert reply.potential_payout_minor == 600
    set_price(ledger, "m2", "x", 190)
    command = ledger.bet_command("alice", 100, ("m1", "a", 300), ("m2", "x", 200), policy="better")
    assert ledger.refused(command) == "price_changed"


def test_requested_odds_need_not_be_on_the_ladder_but_must_be_valid(ledger: Ledger) -> None:
    reply = ledger.ok(ledger.bet_command("alice", 100, ("m1", "a", 201), policy="any"))
    assert reply.odds == h(250)
    for odds in (100, 100_101, 0):
        command = ledger.bet_command("alice", 100, ("m1", "a", odds), policy="any")
        assert ledger.refused(command) == "invalid_odds"


# Every refusal: the code, and nothing changed but the logged refusal.


def assert_refused(ledger: Ledger, command, code: str) -> None:
    hash_before = state_hash(ledger.state)
    balance_before = ledger.balance("alice") if "alice" in ledger.state.accounts else None
    bets_before = dict(ledger.state.bets)
    assert ledger.refused(command) == code
    assert ledger.state.bets == bets_before
    if balance_before is not None:
        assert ledger.balance("alice") == balance_before
    rejected = ledger.log[-1]
    assert isinstance(rejected, CommandRejected)
    assert rejected.postings == ()
    assert rejected.reply.code == code
    assert state_hash(ledger.state) != hash_before  # the refusal itself is remembered
    assert check_invariants(ledger.state) == []


def test_insufficient_funds(ledger: Ledger) -> None:
    assert_refused(
        ledger, ledger.bet_command("alice", 10_001, ("m1", "a", 250)), "insufficient_funds"
    )
    ledger.bet("alice", 10_000, ("m1", "a", 250))
    assert ledger.balance("alice") == 0


def test_market_suspended(ledger: Ledger) -> None:
    ledger.ok(SuspendMarket(request_id=ledger.request_id(), market_id="m2"))
    command = ledger.bet_command("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    assert_refused(ledger, command, "market_suspended")


@pytest.mark.parametrize("final", ["closed", "voided", "settled"])
def test_market_closed(ledger: Ledger, final: str) -> None:
    if final == "voided":
        ledger.ok(VoidMarket(request_id=ledger.request_id(), market_id="m1", actor="o", reason="r"))
    else:
        ledger.close("m1")
    if final == "settled":
        ledger.ok(
            SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("a"),))
        )
    assert_refused(ledger, ledger.bet_command("alice", 100, ("m1", "a", 250)), "market_closed")


def test_price_changed(ledger: Ledger) -> None:
    set_price(ledger, "m1", "a", 240)
    assert_refused(ledger, ledger.bet_command("alice", 100, ("m1", "a", 250)), "price_changed")


def test_stake_too_low(ledger: Ledger) -> None:
    assert_refused(ledger, ledger.bet_command("alice", 9, ("m1", "a", 250)), "stake_too_low")
    assert_refused(ledger, ledger.bet_command("alice", 0, ("m1", "a", 250)), "stake_too_low")
    assert_refused(ledger, ledger.bet_command("alice", -100, ("m1", "a", 250)), "stake_too_low")
    ledger.bet("alice", 10, ("m1", "a", 250))


def test_stake_too_high() -> None:
    ledger = make_ledger(max_stake_minor=5_000)
    assert_refused(ledger, ledger.bet_command("alice", 5_001, ("m1", "a", 250)), "stake_too_high")
    ledger.bet("alice", 5_000, ("m1", "a", 250))


def test_liability_exceeded() -> None:
    ledger = make_ledger(max_liability_minor=3_000)
    ledger.bet("alice", 1_000, ("m1", "a", 250))  # liability 1500
    ledger.bet("alice", 1_000, ("m1", "a", 250))  # liability 3000: at the limit
    assert_refused(ledger, ledger.bet_command("alice", 10, ("m1", "a", 250)), "liability_exceeded")
    ledger.bet("alice", 1_000, ("m1", "b", 300))  # another selection has its own limit


def test_liability_counts_an_accumulator_on_every_leg() -> None:
    ledger = make_ledger(max_liability_minor=3_000)
    ledger.bet("alice", 2_000, ("m2", "x", 200))  # m2/x liability 2000
    ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))  # +400 on m1/a and m2/x
    selections = ledger.state.markets["m2"].selections
    assert selections["x"].liability_minor == 2_400
    command = ledger.bet_command("alice", 300, ("m1", "a", 250), ("m2", "x", 200))  # +1200
    assert_refused(ledger, command, "liability_exceeded")
    assert ledger.state.markets["m1"].selections["a"].liability_minor == 400


def test_self_excluded(ledger: Ledger) -> None:
    ledger.ok(SelfExclude(request_id=ledger.request_id(), account_id="alice", days=1))
    assert_refused(ledger, ledger.bet_command("alice", 100, ("m1", "a", 250)), "self_excluded")


def test_unknown_market(ledger: Ledger) -> None:
    command = ledger.bet_command("alice", 100, ("m1", "a", 250), ("ghost", "a", 250))
    assert_refused(ledger, command, "unknown_market")


def test_unknown_selection(ledger: Ledger) -> None:
    assert_refused(ledger, ledger.bet_command("alice", 100, ("m1", "z", 250)), "unknown_selection")


@pytest.mark.parametrize("account_id", ["bob", "sys:house", "sys:stakes_held"])
def test_unknown_account(ledger: Ledger, account_id: str) -> None:
    command = ledger.bet_command(account_id, 100, ("m1", "a", 250))
    assert_refused(ledger, command, "unknown_account")


def test_no_legs(ledger: Ledger) -> None:
    assert_refused(ledger, ledger.bet_command("alice", 100), "no_legs")


def test_too_many_legs() -> None:
    ledger = make_ledger(max_legs=2)
    command = ledger.bet_command("alice", 100, ("m1", "a", 250), ("m2", "x", 200), ("m3", "p", 150))
    assert_refused(ledger, command, "too_many_legs")
    ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))


def test_default_max_legs_is_twelve() -> None:
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    for number in range(13):
        ledger.create_market(f"m{number}", {"a": 101})
    legs = [(f"m{number}", "a", 101) for number in range(13)]
    assert ledger.refused(ledger.bet_command("alice", 100, *legs)) == "too_many_legs"
    ledger.bet("alice", 100, *legs[:12])
