"""Each-way bets: a win part and a place part of `stake_minor` each, the place
part at the market's place terms fixed at placement, dead heats applied to the
place part as bookmakers do, each-way accumulators as a win acca plus a place
acca, and void / resettle / rollback handling both parts."""

from __future__ import annotations

from ledger_driver import Ledger

from ironbook.core import (
    BetLeg,
    BetReply,
    CloseMarket,
    CreateMarket,
    PlaceBet,
    ResettleMarket,
    RollbackSettlement,
    SelectionSpec,
    SettleMarket,
    VoidMarket,
    Winner,
    check_invariants,
)
from ironbook.core.odds import Ladder, PlaceTerms, parse_odds

FIFTH_3_PLACES = PlaceTerms(1, 5, 3)
QUARTER_2_PLACES = PlaceTerms(1, 4, 2)


def race(ledger: Ledger, market_id: str, terms: PlaceTerms | None, **odds: str) -> None:
    ledger.ok(
        CreateMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            event_id="e",
            name=market_id,
            selections=tuple(SelectionSpec(s, s, parse_odds(o)) for s, o in odds.items()),
            ladder=Ladder(kind="fractional", display="fractional"),
            place_terms=terms,
        )
    )


def each_way(ledger: Ledger, stake_minor: int, *legs: tuple[str, str, str]) -> str:
    reply = ledger.ok(
        PlaceBet(
            request_id=ledger.request_id(),
            account_id="punter",
            stake_minor=stake_minor,
            legs=tuple(BetLeg(m, s, parse_odds(o)) for m, s, o in legs),
            each_way=True,
        )
    )
    assert isinstance(reply, BetReply)
    return reply.bet_id


def settle(ledger: Ledger, market_id: str, *winners: Winner) -> None:
    ledger.ok(CloseMarket(request_id=ledger.request_id(), market_id=market_id))
    ledger.ok(SettleMarket(request_id=ledger.request_id(), market_id=market_id, winners=winners))


def book() -> Ledger:
    ledger = Ledger()
    ledger.open_account("punter", 100_000)
    race(ledger, "r1", FIFTH_3_PLACES, a="5/1", b="2/1", c="7/2", d="10/1", e="evs")
    return ledger


def returned(ledger: Ledger, bet_id: str) -> int:
    assert check_invariants(ledger.state) == []
    return ledger.state.bets[bet_id].payout_minor


def test_an_each_way_bet_stakes_twice_and_keeps_its_terms() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    assert ledger.balance("punter") == 98_000
    assert ledger.held() == 2_000
    bet = ledger.state.bets[bet_id]
    assert bet.each_way and bet.staked_minor == 2_000
    assert bet.legs[0].place is not None
    assert bet.legs[0].place.terms == FIFTH_3_PLACES
    # Win 10 x 6 + place 10 x (1 + 1) if it wins.
    assert bet.potential_payout_minor == 8_000


def test_5_1_each_way_10_pounds_at_a_fifth_3_places_placed_2nd_returns_20() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("b"), Winner("a", position=2), Winner("c", position=3))
    assert returned(ledger, bet_id) == 2_000
    assert ledger.state.bets[bet_id].status == "won"
    assert ledger.balance("punter") == 100_000


def test_5_1_each_way_10_pounds_wins_returns_80() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("a"), Winner("b", position=2), Winner("c", position=3))
    assert returned(ledger, bet_id) == 8_000


def test_a_dead_heat_for_the_last_place_halves_the_place_part() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(
        ledger,
        "r1",
        Winner("b"),
        Winner("c", position=2),
        Winner("a", dead_heat=2, position=3),
        Winner("d", dead_heat=2, position=3),
    )
    assert returned(ledger, bet_id) == 1_000  # £5 at 2/1 (place price 1/1)


def test_a_dead_heat_inside_the_places_pays_in_full() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(
        ledger,
        "r1",
        Winner("b"),
        Winner("a", dead_heat=2, position=2),
        Winner("c", dead_heat=2, position=2),
    )
    assert returned(ledger, bet_id) == 2_000


def test_a_dead_heat_for_the_win_halves_the_win_part_only() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("a", dead_heat=2), Winner("b", dead_heat=2))
    # Win: £5 at 5/1 = £30; place: both tied runners are inside 3 places = £20.
    assert returned(ledger, bet_id) == 5_000


def test_unplaced_loses_both_parts() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("b"), Winner("c", position=2), Winner("d", position=3))
    assert returned(ledger, bet_id) == 0
    assert ledger.state.bets[bet_id].status == "lost"
    assert ledger.house() == 2_000


def test_fractional_place_prices_are_paid_exactly() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "c", "7/2"))
    settle(ledger, "r1", Winner("b"), Winner("c", position=2))
    # Place price 7/10: 10 x 1.7 = 17.00 exactly.
    assert returned(ledger, bet_id) == 1_700


def test_an_each_way_double_is_a_win_double_plus_a_place_double() -> None:
    ledger = book()
    race(ledger, "r2", QUARTER_2_PLACES, x="3/1", y="13/8", z="9/2")
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"), ("r2", "y", "13/8"))
    assert ledger.held() == 2_000
    settle(ledger, "r1", Winner("b"), Winner("a", position=2))
    assert ledger.state.bets[bet_id].status == "open"  # the place double runs on
    settle(ledger, "r2", Winner("y"))
    # Win double lost (a was 2nd); place double: 10 x (1 + 1) x (1 + 13/32) = 28.125.
    assert returned(ledger, bet_id) == 2_812


def test_an_each_way_double_winning_both_legs() -> None:
    ledger = book()
    race(ledger, "r2", QUARTER_2_PLACES, x="3/1", y="13/8", z="9/2")
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"), ("r2", "y", "13/8"))
    settle(ledger, "r1", Winner("a"))
    settle(ledger, "r2", Winner("y"))
    # Win: 10 x 6 x 2.625 = 157.50; place: 28.125 -> 185.625 rounded down once.
    assert returned(ledger, bet_id) == 18_562


def test_each_way_needs_every_market_to_offer_terms() -> None:
    ledger = book()
    race(ledger, "win-only", None, x="3/1")
    command = PlaceBet(
        request_id=ledger.request_id(),
        account_id="punter",
        stake_minor=1_000,
        legs=(BetLeg("r1", "a", parse_odds("5/1")), BetLeg("win-only", "x", parse_odds("3/1"))),
        each_way=True,
    )
    assert ledger.refused(command) == "no_each_way"
    assert ledger.balance("punter") == 100_000


def test_each_way_needs_twice_the_stake_in_the_balance() -> None:
    ledger = book()
    command = PlaceBet(
        request_id=ledger.request_id(),
        account_id="punter",
        stake_minor=60_000,
        legs=(BetLeg("r1", "a", parse_odds("5/1")),),
        each_way=True,
    )
    assert ledger.refused(command) == "insufficient_funds"


def test_void_refunds_both_parts_and_resettle_and_rollback_move_both() -> None:
    ledger = book()
    bet_id = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("b"), Winner("a", position=2))
    assert returned(ledger, bet_id) == 2_000
    ledger.ok(
        ResettleMarket(
            request_id=ledger.request_id(),
            market_id="r1",
            winners=(Winner("a"), Winner("b", position=2)),
            actor="ops",
            reason="stewards' inquiry",
        )
    )
    assert returned(ledger, bet_id) == 8_000
    assert ledger.balance("punter") == 106_000
    ledger.ok(VoidMarket(request_id=ledger.request_id(), market_id="r1", actor="ops", reason="r"))
    assert returned(ledger, bet_id) == 2_000
    assert ledger.state.bets[bet_id].status == "void"
    assert ledger.balance("punter") == 100_000
    ledger.ok(
        RollbackSettlement(request_id=ledger.request_id(), market_id="r1", actor="ops", reason="r")
    )
    assert ledger.state.bets[bet_id].status == "open"
    assert ledger.held() == 2_000
    assert ledger.balance("punter") == 98_000
    assert check_invariants(ledger.state) == []


def test_a_windowed_void_keeps_the_placings_for_the_other_bets() -> None:
    ledger = book()
    early = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    ledger.advance(1_000)
    late = each_way(ledger, 1_000, ("r1", "a", "5/1"))
    settle(ledger, "r1", Winner("b"), Winner("a", position=2))
    ledger.ok(
        VoidMarket(
            request_id=ledger.request_id(),
            market_id="r1",
            actor="ops",
            reason="palpable error",
            placed_from_ms=1_000,
        )
    )
    assert returned(ledger, early) == 2_000
    assert returned(ledger, late) == 2_000
    assert ledger.state.bets[late].status == "void"
    assert ledger.state.markets["r1"].placed == {"a": (2, 1)}
