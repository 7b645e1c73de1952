"""Rolling a settlement back, and cancelling the bets placed in a time window."""

from __future__ import annotations

from ledger_driver import Ledger

from ironbook.core import (
    CASHIER,
    HOUSE,
    STAKES_HELD,
    Accepted,
    LedgerConfig,
    RollbackSettlement,
    SettleMarket,
    VoidMarket,
    Winner,
    Withdraw,
    check_invariants,
)
from ironbook.core.events import MarketResulted, SettlementReply


def make_ledger() -> Ledger:
    ledger = Ledger(LedgerConfig())
    ledger.open_account("alice", 10_000)
    ledger.open_account("bob", 10_000)
    ledger.create_market("m1", {"a": 250, "b": 300})
    ledger.create_market("m2", {"x": 200, "y": 180})
    return ledger


def settle(ledger: Ledger, market_id: str, winner: str) -> None:
    ledger.ok(
        SettleMarket(request_id=ledger.request_id(), market_id=market_id, winners=(Winner(winner),))
    )


def rollback(ledger: Ledger, market_id: str) -> SettlementReply:
    reply = ledger.ok(
        RollbackSettlement(
            request_id=ledger.request_id(), market_id=market_id, actor="ops:ann", reason="wrong"
        )
    )
    assert isinstance(reply, SettlementReply)
    return reply


def money(ledger: Ledger) -> dict[str, int]:
    return {k: a.balance_minor for k, a in ledger.state.accounts.items()}


def assert_conserved(ledger: Ledger) -> None:
    assert check_invariants(ledger.state) == []
    players = sum(a.balance_minor for a in ledger.state.accounts.values() if a.kind == "player")
    assert -ledger.balance(CASHIER) == players + ledger.held() + ledger.house()


def test_rollback_then_settle_again_pays_exactly_once() -> None:
    ledger = make_ledger()
    win = ledger.bet("alice", 1_000, ("m1", "a", 250))
    lose = ledger.bet("bob", 500, ("m1", "b", 300))
    ledger.close("m1")
    before_result = money(ledger)
    settle(ledger, "m1", "a")
    assert ledger.balance("alice") == 9_000 + 2_500
    assert_conserved(ledger)

    reply = rollback(ledger, "m1")
    assert reply == SettlementReply(
        market_id="m1", status="closed", bets_affected=2, paid_minor=-2_500
    )
    assert money(ledger) == before_result
    assert ledger.state.markets["m1"].status == "closed"
    assert ledger.state.markets["m1"].winners == {}
    for bet_id in (win, lose):
        bet = ledger.state.bets[bet_id]
        assert (bet.status, bet.payout_minor, bet.legs[0].outcome) == ("open", 0, "pending")
    assert ledger.held() == 1_500
    assert_conserved(ledger)

    # The provider's corrected result: b won.
    settle(ledger, "m1", "b")
    assert ledger.balance("alice") == 9_000
    assert ledger.balance("bob") == 9_500 + 1_500
    assert ledger.held() == 0
    assert ledger.house() == 1_000 - 1_000
    assert_conserved(ledger)


def test_rollback_of_a_void_and_of_an_accumulator_leg() -> None:
    ledger = make_ledger()
    acca = ledger.bet("alice", 100, ("m1", "a", 250), ("m2", "x", 200))
    ledger.close("m1")
    ledger.close("m2")
    settle(ledger, "m2", "x")
    settle(ledger, "m1", "a")
    assert ledger.state.bets[acca].status == "won"
    assert ledger.balance("alice") == 9_900 + 500
    rollback(ledger, "m1")
    bet = ledger.state.bets[acca]
    assert bet.status == "open"
    assert [leg.outcome for leg in bet.legs] == ["pending", "won"]
    assert ledger.balance("alice") == 9_900
    assert_conserved(ledger)

    ledger.ok(
        VoidMarket(request_id=ledger.request_id(), market_id="m1", actor="ops", reason="abandoned")
    )
    assert ledger.state.bets[acca].status == "won"  # at 1.00 for the void leg
    assert ledger.balance("alice") == 9_900 + 200
    rollback(ledger, "m1")
    assert ledger.state.bets[acca].status == "open"
    assert ledger.balance("alice") == 9_900
    assert_conserved(ledger)


def test_rollback_never_drives_a_player_negative() -> None:
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.close("m1")
    settle(ledger, "m1", "a")
    ledger.ok(Withdraw(request_id="w", account_id="alice", amount_minor=11_000))
    assert ledger.balance("alice") == 500
    outcome = ledger.submit(
        RollbackSettlement(request_id="rb", market_id="m1", actor="ops", reason="r")
    )
    assert isinstance(outcome, Accepted)
    [event] = outcome.events
    assert isinstance(event, MarketResulted)
    assert event.kind == "rollback"
    assert event.written_off == (("alice", 2_000),)
    assert ledger.balance("alice") == 0
    assert ledger.held() == 1_000
    assert_conserved(ledger)


def test_rollback_needs_a_result_an_actor_and_a_reason() -> None:
    ledger = make_ledger()
    assert (
        ledger.refused(RollbackSettlement(request_id="r1", market_id="m1", actor="a", reason="r"))
        == "invalid_status_change"
    )
    ledger.close("m1")
    settle(ledger, "m1", "a")
    assert (
        ledger.refused(RollbackSettlement(request_id="r2", market_id="m1", actor="a", reason=" "))
        == "missing_reason"
    )
    assert (
        ledger.refused(RollbackSettlement(request_id="r3", market_id="zz", actor="a", reason="r"))
        == "unknown_market"
    )


def window_void(ledger: Ledger, market_id: str, from_ms: int | None, to_ms: int | None) -> None:
    ledger.ok(
        VoidMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            actor="feed:bet_cancel",
            reason="goal scored before the bet stop",
            placed_from_ms=from_ms,
            placed_to_ms=to_ms,
        )
    )


def test_a_window_cancel_voids_only_the_bets_placed_in_it() -> None:
    ledger = make_ledger()
    before = ledger.bet("alice", 100, ("m1", "a", 250))
    ledger.advance(1_000)
    inside = ledger.bet("alice", 200, ("m1", "a", 250))
    acca = ledger.bet("bob", 100, ("m1", "b", 300), ("m2", "x", 200))
    ledger.advance(1_000)
    after = ledger.bet("bob", 300, ("m1", "b", 300))
    window_void(ledger, "m1", 1_000, 2_000)
    bets = ledger.state.bets
    assert ledger.state.markets["m1"].status == "open"
    assert [bets[b].status for b in (before, inside, acca, after)] == [
        "open",
        "void",
        "open",
        "open",
    ]
    assert ledger.balance("alice") == 10_000 - 100
    assert bets[acca].legs[0].outcome == "void"
    assert_conserved(ledger)

    # The market's later result leaves the cancelled bets void; the
    # accumulator goes on at 1.00 for its cancelled leg.
    ledger.close("m1")
    settle(ledger, "m1", "a")
    assert [bets[b].status for b in (before, inside, acca, after)] == [
        "won",
        "void",
        "open",
        "lost",
    ]
    ledger.close("m2")
    settle(ledger, "m2", "x")
    assert (bets[acca].status, bets[acca].payout_minor) == ("won", 200)
    # ... and a resettlement or rollback cannot revive them either.
    rollback(ledger, "m1")
    assert bets[inside].status == "void"
    settle(ledger, "m1", "b")
    assert [bets[b].status for b in (before, inside, acca, after)] == [
        "lost",
        "void",
        "won",
        "won",
    ]
    assert_conserved(ledger)


def test_a_window_cancel_on_a_settled_market_reverses_those_bets() -> None:
    ledger = make_ledger()
    early = ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.advance(5_000)
    late = ledger.bet("bob", 1_000, ("m1", "a", 250))
    ledger.close("m1")
    settle(ledger, "m1", "a")
    window_void(ledger, "m1", 5_000, None)
    bets = ledger.state.bets
    assert (bets[early].status, bets[late].status) == ("won", "void")
    assert ledger.state.markets["m1"].status == "settled"
    assert ledger.state.markets["m1"].winners == {"a": 1}
    assert ledger.balance("bob") == 10_000
    assert ledger.balance("alice") == 9_000 + 2_500
    assert_conserved(ledger)


def test_a_window_must_not_be_empty() -> None:
    ledger = make_ledger()
    command = VoidMarket(
        request_id="v", market_id="m1", actor="a", reason="r", placed_from_ms=9, placed_to_ms=3
    )
    assert ledger.refused(command) == "invalid_window"
    command = VoidMarket(request_id="v2", market_id="m1", actor="a", reason="r", placed_from_ms=-1)
    assert ledger.refused(command) == "invalid_window"


def test_system_accounts_balance_after_everything() -> None:
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    ledger.close("m1")
    settle(ledger, "m1", "a")
    rollback(ledger, "m1")
    settle(ledger, "m1", "a")
    assert ledger.balance(STAKES_HELD) == 0
    assert ledger.balance(HOUSE) == -1_500
    assert ledger.balance("alice") == 9_000 + 2_500
    assert_conserved(ledger)
