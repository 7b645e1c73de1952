"""Market results in slices: interleaved with other commands, resumable from
the log by a new leader, bounded by bets and by bytes."""

from __future__ import annotations

from ledger_driver import Ledger

from ironbook.core import (
    HOUSE,
    Accepted,
    GetMarket,
    LedgerConfig,
    LedgerState,
    RollbackSettlement,
    SettleMarket,
    VoidMarket,
    Winner,
    Withdraw,
    acting,
    apply,
    check_invariants,
    continuations,
    decide,
    issued,
    new_state,
    state_hash,
)
from ironbook.core.events import MarketResulted, SettlementReply
from ironbook.core.settling import OUTCOME_BYTES, POSTING_BYTES
from ironbook.core.views import MarketView

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


PLAYERS = ("alice", "bob", "carol")


def big_market(*, continue_results: bool, bets: int = 9, **config: int) -> Ledger:
    ledger = Ledger(LedgerConfig(**config), continue_results=continue_results)
    for player in PLAYERS:
        ledger.open_account(player, 10_000)
    ledger.create_market("m1", {"a": 250, "b": 300})
    ledger.create_market("m2", {"x": 200, "y": 180})
    for number in range(bets):
        ledger.bet(
            PLAYERS[number % 3], 100 + number, ("m1", "ab"[number % 2], (250, 300)[number % 2])
        )
    return ledger


def settle_m1(ledger: Ledger) -> Accepted:
    ledger.close("m1")
    outcome = ledger.submit(
        SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("a"),))
    )
    assert isinstance(outcome, Accepted), outcome
    return outcome


def market_view(ledger: Ledger) -> MarketView:
    view = ledger.ok(GetMarket(request_id=ledger.request_id(), market_id="m1"))
    assert isinstance(view, MarketView)
    return view


def replay(ledger: Ledger) -> LedgerState:
    state = new_state(ledger.state.config)
    for event in ledger.log:
        apply(state, event)
    return state


def test_a_market_settles_slice_by_slice_with_other_commands_in_between() -> None:
    ledger = big_market(continue_results=False, result_slice_bets=4)
    whole = big_market(continue_results=True)
    settle_m1(whole)
    reply = settle_m1(ledger).result
    assert isinstance(reply, SettlementReply)
    assert (reply.status, reply.bets_affected) == ("settling", 4)
    view = market_view(ledger)
    assert (view.status, view.result_done_bets, view.result_total_bets) == ("settling", 4, 9)
    # The book goes on: other markets take bets, players withdraw.
    ledger.bet("alice", 100, ("m2", "x", 200))
    ledger.ok(Withdraw(request_id=ledger.request_id(), account_id="bob", amount_minor=10))
    # The settling market takes no bets and no other result until it is done.
    assert ledger.refused(ledger.bet_command("carol", 100, ("m1", "a", 250))) == "market_closed"
    again = SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("b"),))
    assert ledger.refused(again) == "invalid_status_change"
    void = VoidMarket(request_id=ledger.request_id(), market_id="m1", actor="o", reason="r")
    assert ledger.refused(void) == "invalid_status_change"
    assert check_invariants(ledger.state) == []
    ledger.continue_once()
    assert market_view(ledger).result_done_bets == 8
    ledger.continue_once()
    view = market_view(ledger)
    assert (view.status, view.result_done_bets, view.result_total_bets) == ("settled", 0, 0)
    assert ledger.state.settlements == {}
    ledger.continue_once()  # nothing left: logs nothing
    slices = [event for event in ledger.log if isinstance(event, MarketResulted)]
    assert [len(piece.bets) for piece in slices] == [4, 4, 1]
    assert ledger.balance("alice") == whole.balance("alice") - 100
    assert ledger.balance("bob") == whole.balance("bob") - 10
    assert ledger.balance("carol") == whole.balance("carol")
    for bet_id, bet in whole.state.bets.items():
        assert ledger.state.bets[bet_id].payout_minor == bet.payout_minor
    assert check_invariants(ledger.state) == []


def test_a_new_leader_resumes_from_the_last_logged_slice_exactly_once() -> None:
    ledger = big_market(continue_results=False, result_slice_bets=2)
    settle_m1(ledger)
    ledger.continue_once()
    # A follower that replayed the log holds the same progress...
    follower = replay(ledger)
    assert state_hash(follower) == state_hash(ledger.state)
    assert follower.settlements["m1"].cursor == 4
    # ... so as the new leader it decides exactly the slices still to come.
    paid_before = {bet_id: bet.payout_minor for bet_id, bet in follower.bets.items()}
    resumed: list[MarketResulted] = []
    while follower.settlements:
        [continuation] = continuations(follower)
        outcome = decide(follower, issued(continuation, PEOPLE), ledger.now_ms)
        for event in outcome.events:
            assert isinstance(event, MarketResulted)
            apply(follower, event)
            resumed.append(event)
    assert [(piece.slice_from, piece.slice_to) for piece in resumed] == [(4, 6), (6, 8), (8, 9)]
    done_before = {o.bet_id for e in ledger.log if isinstance(e, MarketResulted) for o in e.bets}
    assert not done_before & {o.bet_id for piece in resumed for o in piece.bets}
    assert all(paid_before[b] == 0 for b in (o.bet_id for p in resumed for o in p.bets))
    # The old leader's stale continuation, decided on the new state, is a no-op.
    stale = continuations(ledger.state)[0]
    assert decide(follower, issued(stale, PEOPLE), ledger.now_ms).events == ()
    whole = big_market(continue_results=True)
    settle_m1(whole)
    for account in (*PLAYERS, HOUSE):
        assert follower.accounts[account].balance_minor == whole.balance(account)
    assert check_invariants(follower) == []


def test_a_slice_ends_at_its_byte_bound() -> None:
    ledger = big_market(continue_results=True, result_slice_bytes=100)
    settle_m1(ledger)
    slices = [event for event in ledger.log if isinstance(event, MarketResulted)]
    assert len(slices) > 1
    assert [o.bet_id for piece in slices for o in piece.bets] == ledger.state.markets["m1"].bet_ids
    for piece in slices[:-1]:
        outcome_bytes = [len(o.bet_id) + OUTCOME_BYTES for o in piece.bets]
        posting_bytes = sum(
            len(account) + POSTING_BYTES for account, _ in piece.postings if account in PLAYERS
        )
        # It reached the bound, and reached it only with its last bet.
        assert sum(outcome_bytes) + posting_bytes >= 100
        assert sum(outcome_bytes[:-1]) < 100
    assert check_invariants(ledger.state) == []


def test_a_windowed_void_in_slices_leaves_the_market_open() -> None:
    ledger = big_market(continue_results=False, result_slice_bets=3)
    ledger.advance(1_000)
    late = ledger.bet("alice", 100, ("m1", "a", 250))
    cancel = VoidMarket(
        request_id=ledger.request_id(),
        market_id="m1",
        actor="ops",
        reason="late goal",
        placed_from_ms=0,
        placed_to_ms=1_000,
    )
    ledger.ok(cancel)
    view = market_view(ledger)
    assert (view.status, view.result_done_bets, view.result_total_bets) == ("open", 3, 10)
    during = ledger.bet("bob", 100, ("m1", "b", 300))
    ledger.close("m1")
    for _ in range(3):
        ledger.continue_once()
    assert ledger.state.settlements == {}
    assert ledger.state.markets["m1"].status == "closed"
    statuses = [ledger.state.bets[f"B0-{n}"].status for n in range(1, 10)]
    assert statuses == ["void"] * 9
    assert ledger.state.bets[late].status == ledger.state.bets[during].status == "open"
    assert check_invariants(ledger.state) == []


def test_a_rollback_in_slices_reopens_every_bet() -> None:
    ledger = big_market(continue_results=True, result_slice_bets=2)
    before = {player: ledger.balance(player) for player in PLAYERS}
    settle_m1(ledger)
    rollback = RollbackSettlement(
        request_id=ledger.request_id(), market_id="m1", actor="ops", reason="wrong result"
    )
    reply = ledger.ok(rollback)
    assert isinstance(reply, SettlementReply)
    assert reply.status == "settling"
    assert ledger.state.markets["m1"].status == "closed"
    assert {bet.status for bet in ledger.state.bets.values()} == {"open"}
    assert {player: ledger.balance(player) for player in PLAYERS} == before
    assert check_invariants(ledger.state) == []
