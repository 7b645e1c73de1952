"""In-play bet delay: bets held by log time, then accepted or rejected."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    CASHIER,
    Accepted,
    BetReply,
    CreateMarket,
    LedgerConfig,
    PriceChangePolicy,
    ReleaseBets,
    ReleaseReply,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SetProducerStatus,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    acting,
    apply,
    check_invariants,
    decide,
    issued,
    new_state,
    state_hash,
)
from ironbook.core.decide import MAX_RELEASED_BETS
from ironbook.core.events import BetPlaced, BetsReleased
from ironbook.core.odds import from_hundredths as h
from ironbook.core.queries import GetBet
from ironbook.core.views import BetView

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


def in_play(ledger: Ledger, market_id: str, delay_s: int, producer: str = "", **odds: int) -> None:
    ledger.ok(
        CreateMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            event_id="ev",
            name=market_id,
            selections=tuple(
                SelectionSpec(selection_id=s, name=s, odds=o) for s, o in odds.items()
            ),
            in_play=True,
            bet_delay_s=delay_s,
            producer=producer,
        )
    )


def make_ledger(**config: int) -> Ledger:
    ledger = Ledger(LedgerConfig(**config), now_ms=1_000_000)
    ledger.open_account("alice", 10_000)
    ledger.open_account("bob", 10_000)
    in_play(ledger, "live", 5, a=200, b=300)
    in_play(ledger, "slow", 8, x=150)
    ledger.create_market("pre", {"p": 400})
    return ledger


def release(ledger: Ledger) -> ReleaseReply:
    reply = ledger.ok(ReleaseBets(request_id=ledger.request_id()))
    assert isinstance(reply, ReleaseReply)
    return reply


def price(ledger: Ledger, market_id: str, selection_id: str, odds: int) -> None:
    ledger.ok(
        UpdatePrices(
            request_id=ledger.request_id(),
            market_id=market_id,
            prices=(SelectionPrice(selection_id=selection_id, odds=odds),),
        )
    )


def place(
    ledger: Ledger,
    stake: int,
    *legs: tuple[str, str, int],
    policy: PriceChangePolicy = "none",
    account: str = "alice",
) -> str:
    reply = ledger.ok(ledger.bet_command(account, stake, *legs, policy=policy))
    assert isinstance(reply, BetReply)
    return reply.bet_id


def assert_sound(ledger: Ledger) -> None:
    assert check_invariants(ledger.state) == []
    replayed = new_state(ledger.state.config)
    for event in ledger.log:
        apply(replayed, event)
    assert state_hash(replayed) == state_hash(ledger.state)


def test_a_bet_on_an_in_play_market_is_held_for_the_longest_delay() -> None:
    ledger = make_ledger()
    reply = ledger.ok(ledger.bet_command("alice", 100, ("live", "a", 200), ("slow", "x", 150)))
    assert isinstance(reply, BetReply)
    assert reply.status == "pending"
    assert reply.balance_minor == 9_900
    placed = ledger.log[-1]
    assert isinstance(placed, BetPlaced)
    assert placed.release_ms == ledger.now_ms + 8_000
    bet = ledger.state.bets[reply.bet_id]
    assert bet.status == "pending"
    assert ledger.state.pending_bets == [(ledger.now_ms + 8_000, reply.bet_id)]
    assert ledger.held() == 100
    assert ledger.state.markets["live"].selections["a"].liability_minor == 200
    assert_sound(ledger)
    # A pre-match bet is live at once.
    assert ledger.state.bets[place(ledger, 100, ("pre", "p", 400))].status == "open"


def test_nothing_is_released_before_its_time() -> None:
    ledger = make_ledger()
    bet_id = place(ledger, 100, ("live", "a", 200))
    ledger.advance(4_999)
    log_length = len(ledger.log)
    assert release(ledger) == ReleaseReply(accepted=0, rejected=0)
    assert len(ledger.log) == log_length  # nothing to log
    ledger.advance(1)
    assert release(ledger) == ReleaseReply(accepted=1, rejected=0)
    bet = ledger.state.bets[bet_id]
    assert bet.status == "open"
    assert ledger.state.pending_bets == []
    # A resent release is answered from the log and changes nothing.
    last = ledger.log[-1]
    assert ledger.state.replies[last.request_id] == ReleaseReply(accepted=1, rejected=0)
    place(ledger, 100, ("live", "a", 200))
    ledger.advance(5_000)
    outcome = ledger.submit(ReleaseBets(request_id=last.request_id))
    assert outcome == Accepted(events=(), result=ReleaseReply(accepted=1, rejected=0))
    assert len(ledger.state.pending_bets) == 1
    assert_sound(ledger)


@pytest.mark.parametrize(
    ("policy", "new_odds", "accepted"),
    [
        ("none", 200, True),
        ("none", 210, False),
        ("better", 210, True),
        ("better", 190, False),
        ("any", 150, True),
    ],
)
def test_release_judges_the_price_by_the_bets_policy(
    policy: PriceChangePolicy, new_odds: int, accepted: bool
) -> None:
    ledger = make_ledger()
    bet_id = place(ledger, 1_000, ("live", "a", 200), policy=policy)
    price(ledger, "live", "a", new_odds)
    ledger.advance(5_000)
    release(ledger)
    bet = ledger.state.bets[bet_id]
    if accepted:
        # At the odds taken at placement: the payout is unchanged.
        assert (bet.status, bet.potential_payout_minor, bet.legs[0].odds) == ("open", 2_000, h(200))
        assert ledger.balance("alice") == 9_000
    else:
        assert (bet.status, bet.reject_code) == ("rejected", "price_changed")
        assert ledger.balance("alice") == 10_000
        assert ledger.state.markets["live"].selections["a"].liability_minor == 0
        assert ledger.state.markets["live"].max_liability_minor == 0
    assert_sound(ledger)


def test_rejections_refund_the_stake_with_a_code() -> None:
    ledger = make_ledger()
    suspended = place(ledger, 100, ("live", "a", 200))
    closed = place(ledger, 200, ("slow", "x", 150), account="bob")
    ledger.ok(SuspendMarket(request_id="s", market_id="live"))
    ledger.close("slow")
    ledger.advance(8_000)
    assert release(ledger) == ReleaseReply(accepted=0, rejected=2)
    event = ledger.log[-1]
    assert isinstance(event, BetsReleased)
    assert event.rejected == ((suspended, "market_suspended"), (closed, "market_closed"))
    assert ledger.balance("alice") == 10_000
    assert ledger.balance("bob") == 10_000
    assert ledger.held() == 0
    view = ledger.ok(GetBet(request_id="g", bet_id=closed))
    assert isinstance(view, BetView)
    assert (view.status, view.reject_code) == ("rejected", "market_closed")
    assert_sound(ledger)


def test_a_producer_going_down_during_the_delay_rejects_the_bet() -> None:
    ledger = make_ledger()
    in_play(ledger, "fed", 3, producer="lsports", z=200)
    bet_id = place(ledger, 100, ("fed", "z", 200))
    ledger.ok(SetProducerStatus(request_id="d", producer="lsports", down=True))
    ledger.advance(3_000)
    release(ledger)
    assert ledger.state.bets[bet_id].reject_code == "market_suspended"
    assert_sound(ledger)


def test_settlement_while_pending_skips_the_held_bet() -> None:
    ledger = make_ledger()
    live_bet = ledger.bet("bob", 100, ("pre", "p", 400))
    held = place(ledger, 100, ("live", "a", 200))
    ledger.close("live")
    ledger.ok(SettleMarket(request_id="s", market_id="live", winners=(Winner("a"),)))
    assert ledger.state.bets[held].status == "pending"
    assert ledger.held() == 200
    assert_sound(ledger)
    ledger.ok(RollbackSettlement(request_id="rb", market_id="live", actor="a", reason="r"))
    ledger.ok(SettleMarket(request_id="s2", market_id="live", winners=(Winner("b"),)))
    assert ledger.state.bets[held].status == "pending"
    ledger.advance(5_000)
    assert release(ledger) == ReleaseReply(accepted=0, rejected=1)
    assert ledger.state.bets[held].reject_code == "market_closed"
    assert ledger.balance("alice") == 10_000
    assert ledger.state.bets[live_bet].status == "open"
    assert_sound(ledger)


def test_a_full_void_while_pending_rejects_at_release() -> None:
    ledger = make_ledger()
    held = place(ledger, 100, ("live", "a", 200))
    ledger.ok(VoidMarket(request_id="v", market_id="live", actor="a", reason="r"))
    assert ledger.state.bets[held].status == "pending"
    ledger.advance(5_000)
    release(ledger)
    assert ledger.state.bets[held].reject_code == "market_closed"
    assert ledger.balance("alice") == 10_000
    assert_sound(ledger)


def test_a_window_cancel_voids_held_bets_placed_in_it() -> None:
    ledger = make_ledger()
    held = place(ledger, 100, ("live", "a", 200), ("pre", "p", 400))
    ledger.ok(
        VoidMarket(
            request_id="v",
            market_id="live",
            actor="a",
            reason="r",
            placed_from_ms=ledger.now_ms,
            placed_to_ms=ledger.now_ms + 1,
        )
    )
    bet = ledger.state.bets[held]
    assert (bet.status, bet.payout_minor) == ("void", 100)
    assert [leg.outcome for leg in bet.legs] == ["void", "void"]
    assert ledger.state.pending_bets == []
    assert ledger.balance("alice") == 10_000
    assert_sound(ledger)
    # A later result on its other market leaves it void.
    ledger.close("pre")
    ledger.ok(SettleMarket(request_id="s", market_id="pre", winners=(Winner("p"),)))
    assert ledger.state.bets[held].status == "void"
    assert ledger.balance("alice") == 10_000
    assert_sound(ledger)


def test_release_is_bounded_per_command_and_in_release_order() -> None:
    ledger = make_ledger(max_liability_minor=10**9, max_market_liability_minor=10**9)
    ledger.open_account("carol", 10**7)
    first = place(ledger, 10, ("slow", "x", 150), account="carol")
    ids = [place(ledger, 10, ("live", "a", 200), account="carol") for _ in range(MAX_RELEASED_BETS)]
    ledger.advance(8_000)
    assert release(ledger) == ReleaseReply(accepted=MAX_RELEASED_BETS, rejected=0)
    # Released oldest first: the 5 s bets came due before the 8 s one.
    assert ledger.state.pending_bets == [(1_000_000 + 8_000, first)]
    assert all(ledger.state.bets[bet_id].status == "open" for bet_id in ids)
    assert release(ledger) == ReleaseReply(accepted=1, rejected=0)
    assert_sound(ledger)


def test_release_is_decided_by_log_time_and_replays() -> None:
    ledger = make_ledger()
    place(ledger, 100, ("live", "a", 200))
    command = ReleaseBets(request_id="r")
    early = decide(ledger.state, issued(command, PEOPLE), ledger.now_ms)
    assert isinstance(early, Accepted)
    assert early.events == ()
    late = decide(ledger.state, issued(command, PEOPLE), ledger.now_ms + 5_000)
    assert isinstance(late, Accepted)
    assert [type(event) for event in late.events] == [BetsReleased]
    assert_sound(ledger)


def test_conservation_through_a_whole_in_play_session() -> None:
    ledger = make_ledger()
    deposits = 20_000
    for number in range(20):
        selection = "a" if number % 2 else "b"
        quoted = ledger.state.markets["live"].selections[selection].odds
        account = "alice" if number % 3 else "bob"
        place(ledger, 50 + number, ("live", selection, quoted), account=account)
        if number % 5 == 0:
            price(ledger, "live", "a", 200 + 10 * (number % 3))
        ledger.advance(1_000)
        release(ledger)
        assert_sound(ledger)
    ledger.advance(10_000)
    release(ledger)
    assert ledger.state.pending_bets == []
    ledger.close("live")
    ledger.ok(SettleMarket(request_id="s", market_id="live", winners=(Winner("a"),)))
    assert ledger.held() == 0
    players = ledger.balance("alice") + ledger.balance("bob")
    assert players + ledger.house() == deposits == -ledger.balance(CASHIER)
    assert_sound(ledger)
