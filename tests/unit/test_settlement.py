"""Settlement, void, resettlement, write-offs and results in slices."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    HOUSE,
    Accepted,
    LedgerConfig,
    Principal,
    ResettleMarket,
    SettleMarket,
    SuspendMarket,
    VoidMarket,
    Winner,
    Withdraw,
    check_invariants,
)
from ironbook.core.events import MarketResulted


def make_ledger(**config: int) -> Ledger:
    ledger = Ledger(LedgerConfig(**config))
    ledger.open_account("alice", 10_000)
    ledger.open_account("bob", 10_000)
    ledger.create_market("m1", {"a": 250, "b": 300, "c": 500})
    ledger.create_market("m2", {"x": 200, "y": 180})
    ledger.create_market("m3", {"p": 150, "q": 400})
    return ledger


@pytest.fixture
def ledger() -> Ledger:
    return make_ledger()


def winners(*names: str | tuple[str, int]) -> tuple[Winner, ...]:
    return tuple(
        Winner(selection_id=n) if isinstance(n, str) else Winner(selection_id=n[0], dead_heat=n[1])
        for n in names
    )


def settle(ledger: Ledger, market_id: str, *names: str | tuple[str, int]) -> Accepted:
    if ledger.state.markets[market_id].status == "open":
        ledger.close(market_id)
    outcome = ledger.submit(
        SettleMarket(request_id=ledger.request_id(), market_id=market_id, winners=winners(*names))
    )
    assert isinstance(outcome, Accepted), outcome
    return outcome


def void(ledger: Ledger, market_id: str, actor: str = "ops:ann", reason: str = "abandoned"):
    outcome = ledger.submit(
        VoidMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            actor=actor,
            reason=reason,
            principal=Principal(subject=actor, role="admin"),
        )
    )
    assert isinstance(outcome, Accepted), outcome
    return outcome


def resettle(
    ledger: Ledger, market_id: str, *names: str | tuple[str, int], reason: str = "stewards"
) -> Accepted:
    outcome = ledger.submit(
        ResettleMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            winners=winners(*names),
            actor="ops:bo",
            reason=reason,
            principal=Principal(subject="ops:bo", role="admin"),
        )
    )
    assert isinstance(outcome, Accepted), outcome
    return outcome


def only_event(outcome: Accepted) -> MarketResulted:
    [event] = outcome.events
    assert isinstance(event, MarketResulted)
    return event


def assert_books_balance(ledger: Ledger) -> None:
    assert check_invariants(ledger.state) == []
    for event in ledger.log:
        assert sum(amount for _, amount in event.postings) == 0


def test_winning_single(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 1_000, ("m1", "a", 250))
    outcome = settle(ledger, "m1", "a")
    event = only_event(outcome)
    assert event.kind == "settle"
    assert event.status == "settled"
    assert event.actor == "test:trader"  # the principal's subject
    assert [(o.bet_id, o.status, o.payout_minor) for o in event.bets] == [(bet_id, "won", 2_500)]
    assert outcome.result.paid_minor == 2_500
    assert outcome.result.bets_affected == 1
    assert ledger.balance("alice") == 11_500
    assert ledger.house() == -1_500
    assert ledger.held() == 0
    assert ledger.state.bets[bet_id].status == "won"
    assert ledger.state.bets[bet_id].payout_minor == 2_500
    assert ledger.state.markets["m1"].selections["a"].liability_minor == 0
    assert_books_balance(ledger)


def test_losing_single(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 1_000, ("m1", "a", 250))
    outcome = settle(ledger, "m1", "b")
    assert outcome.result.paid_minor == 0
    assert ledger.state.bets[bet_id].status == "lost"
    assert ledger.balance("alice") == 9_000
    assert ledger.house() == 1_000
    assert ledger.held() == 0
    assert_books_balance(ledger)


def test_settle_records_the_actor(ledger: Ledger) -> None:
    ledger.close("m1")
    outcome = ledger.submit(
        SettleMarket(
            request_id=ledger.request_id(),
            market_id="m1",
            winners=winners("a"),
            actor="feed:pa",
            principal=Principal(subject="feed:pa", role="admin"),
        )
    )
    assert isinstance(outcome, Accepted)
    assert only_event(outcome).actor == "feed:pa"


def test_settle_a_suspended_market(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.ok(SuspendMarket(request_id=ledger.request_id(), market_id="m1"))
    settle(ledger, "m1", "a")
    assert ledger.balance("alice") == 11_500


def test_market_without_bets(ledger: Ledger) -> None:
    outcome = settle(ledger, "m1", "a")
    event = only_event(outcome)
    assert event.bets == ()
    assert event.postings == ()
    assert outcome.result.bets_affected == 0


def test_many_bets_many_players(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.bet("bob", 2_000, ("m1", "b", 300))
    ledger.bet("bob", 500, ("m1", "a", 250))
    outcome = settle(ledger, "m1", "a")
    assert outcome.result.paid_minor == 2_500 + 1_250
    assert ledger.balance("alice") == 11_500
    assert ledger.balance("bob") == 10_000 - 2_500 + 1_250
    assert ledger.house() == -1_500 + 2_000 - 750
    assert_books_balance(ledger)


@pytest.mark.parametrize(
    ("stake", "odds", "dead_heat", "payout"),
    [(1_000, 500, 2, 2_500), (100, 300, 3, 100), (101, 300, 2, 151), (333, 250, 1, 832)],
)
def test_dead_heat_divides_the_stake(
    ledger: Ledger, stake: int, odds: int, dead_heat: int, payout: int
) -> None:
    selection = {500: "c", 300: "b", 250: "a"}[odds]
    bet_id = ledger.bet("alice", stake, ("m1", selection, odds))
    settle(ledger, "m1", (selection, dead_heat), "a" if selection != "a" else "b")
    assert ledger.state.bets[bet_id].payout_minor == payout
    assert ledger.balance("alice") == 10_000 - stake + payout
    assert_books_balance(ledger)


def test_void_refunds_every_stake(ledger: Ledger) -> None:
    first = ledger.bet("alice", 1_000, ("m1", "a", 250))
    second = ledger.bet("bob", 700, ("m1", "b", 300))
    outcome = void(ledger, "m1")
    event = only_event(outcome)
    assert (event.kind, event.status, event.actor, event.reason) == (
        "void",
        "voided",
        "ops:ann",
        "abandoned",
    )
    assert {(o.bet_id, o.status, o.payout_minor) for o in event.bets} == {
        (first, "void", 1_000),
        (second, "void", 700),
    }
    assert ledger.balance("alice") == 10_000
    assert ledger.balance("bob") == 10_000
    assert ledger.house() == 0
    assert ledger.held() == 0
    assert_books_balance(ledger)


# Accumulators.


def test_accumulator_settles_only_when_every_leg_is_resulted(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    outcome = settle(ledger, "m1", "a")
    assert only_event(outcome).bets[0].status == "open"
    assert ledger.state.bets[bet_id].status == "open"
    assert ledger.held() == 100
    assert ledger.balance("alice") == 9_900
    assert ledger.state.markets["m2"].selections["x"].liability_minor == 400
    settle(ledger, "m2", "x")
    assert ledger.state.bets[bet_id].status == "won"
    assert ledger.state.bets[bet_id].payout_minor == 500
    assert ledger.balance("alice") == 10_400
    assert ledger.held() == 0
    assert_books_balance(ledger)


def test_lost_first_leg_loses_the_accumulator_at_once(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "b")
    assert ledger.state.bets[bet_id].status == "lost"
    assert ledger.held() == 0
    assert ledger.house() == 100
    assert ledger.state.markets["m2"].selections["x"].liability_minor == 0
    settle(ledger, "m2", "x")
    assert ledger.state.bets[bet_id].status == "lost"
    assert ledger.house() == 100
    assert_books_balance(ledger)


def test_lost_later_leg_loses_the_accumulator_at_once(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    outcome = settle(ledger, "m2", "y")
    assert only_event(outcome).bets[0].status == "lost"
    assert ledger.state.bets[bet_id].status == "lost"
    assert ledger.held() == 0


def test_void_leg_drops_out_at_evens_one(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200), ("m3", "q", 400))
    void(ledger, "m2")
    assert ledger.state.bets[bet_id].status == "open"
    settle(ledger, "m1", "a")
    settle(ledger, "m3", "q")
    assert ledger.state.bets[bet_id].status == "won"
    assert ledger.state.bets[bet_id].payout_minor == 1_000  # 100 × 2.50 × 1.00 × 4.00
    assert_books_balance(ledger)


def test_accumulator_with_every_leg_void_is_refunded(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    void(ledger, "m1")
    void(ledger, "m2")
    assert ledger.state.bets[bet_id].status == "void"
    assert ledger.state.bets[bet_id].payout_minor == 100
    assert ledger.balance("alice") == 10_000
    assert_books_balance(ledger)


def test_dead_heat_in_an_accumulator(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m3", "q", 400), ("m1", "b", 300))
    settle(ledger, "m3", ("q", 2), ("p", 2))
    settle(ledger, "m1", "b")
    assert ledger.state.bets[bet_id].payout_minor == 600  # 100 × 4 × 3 ÷ 2
    assert_books_balance(ledger)


def test_accumulator_payout_rounds_down_once(ledger: Ledger) -> None:
    ledger.create_market("m4", {"r": 150})
    ledger.create_market("m5", {"s": 150})
    ledger.create_market("m6", {"t": 150})
    bet_id = ledger.bet("alice", 100, ("m4", "r", 150), ("m5", "s", 150), ("m6", "t", 150))
    for market_id, selection in (("m4", "r"), ("m5", "s"), ("m6", "t")):
        settle(ledger, market_id, selection)
    assert ledger.state.bets[bet_id].payout_minor == 337  # not 100→150→225→337 rounded per leg


# Resettlement and voids after a result.


def test_resettle_reverses_then_reapplies(ledger: Ledger) -> None:
    alice_bet = ledger.bet("alice", 1_000, ("m1", "a", 250))
    bob_bet = ledger.bet("bob", 1_000, ("m1", "b", 300))
    settle(ledger, "m1", "a")
    assert (ledger.balance("alice"), ledger.balance("bob")) == (11_500, 9_000)
    outcome = resettle(ledger, "m1", "b", reason="photo finish reviewed")
    event = only_event(outcome)
    assert (event.kind, event.status, event.actor, event.reason) == (
        "resettle",
        "settled",
        "ops:bo",
        "photo finish reviewed",
    )
    assert event.written_off == ()
    assert outcome.result.paid_minor == -2_500 + 3_000
    assert (ledger.balance("alice"), ledger.balance("bob")) == (9_000, 12_000)
    assert ledger.state.bets[alice_bet].status == "lost"
    assert ledger.state.bets[bob_bet].status == "won"
    assert ledger.state.bets[bob_bet].payout_minor == 3_000
    assert ledger.house() == -1_000
    assert ledger.state.markets["m1"].winners == {"b": 1}
    assert_books_balance(ledger)


def test_resettle_with_the_same_result_changes_no_money(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a")
    outcome = resettle(ledger, "m1", "a")
    assert only_event(outcome).postings == ()
    assert outcome.result.paid_minor == 0
    assert ledger.balance("alice") == 11_500


def test_resettle_to_a_dead_heat(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a")
    resettle(ledger, "m1", ("a", 2), ("b", 2))
    assert ledger.balance("alice") == 9_000 + 1_250
    assert_books_balance(ledger)


def test_resettle_writes_off_what_the_player_already_withdrew(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a")
    ledger.ok(Withdraw(request_id=ledger.request_id(), account_id="alice", amount_minor=11_000))
    assert ledger.balance("alice") == 500
    house_before = ledger.house()
    outcome = resettle(ledger, "m1", "b")
    event = only_event(outcome)
    assert event.written_off == (("alice", 2_000),)
    assert ledger.balance("alice") == 0
    assert ledger.house() == house_before + 500
    assert outcome.result.paid_minor == -500
    assert_books_balance(ledger)


def test_void_after_settle_refunds_the_stake(ledger: Ledger) -> None:
    alice_bet = ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.bet("bob", 1_000, ("m1", "b", 300))
    settle(ledger, "m1", "a")
    outcome = void(ledger, "m1", actor="ops:cy", reason="race declared void")
    event = only_event(outcome)
    assert (event.actor, event.reason, event.status) == ("ops:cy", "race declared void", "voided")
    assert ledger.state.bets[alice_bet].status == "void"
    assert (ledger.balance("alice"), ledger.balance("bob")) == (10_000, 10_000)
    assert ledger.house() == 0
    assert ledger.held() == 0
    assert_books_balance(ledger)


def test_resettle_a_voided_market(ledger: Ledger) -> None:
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.close("m1")
    void(ledger, "m1")
    resettle(ledger, "m1", "a")
    assert ledger.state.markets["m1"].status == "settled"
    assert ledger.balance("alice") == 11_500
    assert_books_balance(ledger)


def test_resettle_reopens_an_accumulator_whose_other_leg_is_pending(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "b")
    assert ledger.state.bets[bet_id].status == "lost"
    resettle(ledger, "m1", "a")
    assert ledger.state.bets[bet_id].status == "open"
    assert ledger.held() == 100
    assert ledger.house() == 0
    assert ledger.state.markets["m2"].selections["x"].liability_minor == 400
    settle(ledger, "m2", "x")
    assert ledger.balance("alice") == 10_400
    assert_books_balance(ledger)


def test_void_after_settle_of_one_accumulator_leg(ledger: Ledger) -> None:
    bet_id = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "a")
    settle(ledger, "m2", "x")
    assert ledger.balance("alice") == 10_400
    void(ledger, "m1")
    assert ledger.state.bets[bet_id].status == "won"
    assert ledger.state.bets[bet_id].payout_minor == 200
    assert ledger.balance("alice") == 10_100
    assert_books_balance(ledger)


# Results in slices.


def sliced_ledger(slice_bets: int) -> tuple[Ledger, list[str]]:
    ledger = make_ledger(result_slice_bets=slice_bets)
    ledger.open_account("carol", 10_000)
    bet_ids = []
    for number, (account, selection, odds) in enumerate(
        [
            ("alice", "a", 250),
            ("bob", "b", 300),
            ("carol", "a", 250),
            ("alice", "c", 500),
            ("bob", "a", 250),
            ("carol", "b", 300),
            ("alice", "a", 250),
        ]
    ):
        bet_ids.append(ledger.bet(account, 100 + number, ("m1", selection, odds)))
    return ledger, bet_ids


@pytest.mark.parametrize("kind", ["settle", "void", "resettle"])
def test_big_results_are_sliced_and_every_slice_balances(kind: str) -> None:
    ledger, bet_ids = sliced_ledger(slice_bets=3)
    whole, _ = sliced_ledger(slice_bets=1_000)
    for book in (ledger, whole):
        if kind == "settle":
            settle(book, "m1", "a")
        elif kind == "void":
            void(book, "m1")
        else:
            settle(book, "m1", "b")
            resettle(book, "m1", "a")
    slices = [event for event in ledger.log if isinstance(event, MarketResulted)][-3:]
    assert [len(piece.bets) for piece in slices] == [3, 3, 1]
    assert [(piece.slice_from, piece.slice_to) for piece in slices] == [(0, 3), (3, 6), (6, 7)]
    assert [piece.reply is None for piece in slices] == [False, True, True]
    assert [o.bet_id for piece in slices for o in piece.bets] == bet_ids
    # Each slice moves its own bets' money, and balances on its own.
    for piece in slices:
        assert piece.postings
        assert sum(amount for _, amount in piece.postings) == 0
        assert piece.request_id == slices[0].request_id
    first_reply = slices[0].reply
    assert first_reply is not None
    assert first_reply.status == "settling"
    assert first_reply.bets_affected == 3
    assert ledger.state.replies[slices[0].request_id] == first_reply
    assert ledger.state.settlements == {}
    for account in ("alice", "bob", "carol", HOUSE):
        assert ledger.balance(account) == whole.balance(account)
    assert {b: ledger.state.bets[b].payout_minor for b in bet_ids} == {
        b: whole.state.bets[b].payout_minor for b in bet_ids
    }
    assert ledger.state.markets["m1"].status == whole.state.markets["m1"].status
    assert_books_balance(ledger)


@pytest.mark.parametrize("slice_bets", [1, 2, 1_000])
def test_resettle_write_off_does_not_depend_on_the_slice_size(slice_bets: int) -> None:
    ledger = Ledger(LedgerConfig(result_slice_bets=slice_bets))
    ledger.open_account("bob", 200)
    ledger.create_market("m1", {"a": 200, "b": 300})
    ledger.bet("bob", 100, ("m1", "a", 200))
    ledger.bet("bob", 100, ("m1", "b", 300))
    settle(ledger, "m1", "a")
    ledger.ok(Withdraw(request_id=ledger.request_id(), account_id="bob", amount_minor=200))
    resettle(ledger, "m1", "b")
    # Bob's net change is -200 + 300 = +100: nothing needs writing off.
    written_off = [
        posting
        for event in ledger.log
        if isinstance(event, MarketResulted)
        for posting in event.written_off
    ]
    assert written_off == []
    assert ledger.balance("bob") == 100
    assert ledger.house() == -100
