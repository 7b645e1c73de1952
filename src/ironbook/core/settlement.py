"""Settlement rules shared by `decide` (which computes a result) and `apply`
(which records it): what a market result means for one leg, and for a bet.

A result names the winners (position 1) and, for each-way bets, the runners
placed below them, each with how many runners tied at its position."""

from __future__ import annotations

from collections.abc import Iterable

from ironbook.core.commands import Winner
from ironbook.core.events import BetStatus, LegOutcome, ResultKind
from ironbook.core.odds import PlaceTerms, Price, payout_minor, place_price, places_paid
from ironbook.core.state import Bet, PlacedLeg

Placings = dict[str, tuple[int, int]]
"""selection id -> (position, runners tied there), for positions below first."""


def result_maps(winners: Iterable[Winner]) -> tuple[dict[str, int], Placings]:
    """A result's winners (selection id -> dead-heat divisor) and the runners
    placed below first (selection id -> (position, runners tied))."""
    won: dict[str, int] = {}
    placed: Placings = {}
    for winner in winners:
        if winner.position == 1:
            won[winner.selection_id] = winner.dead_heat
        else:
            placed[winner.selection_id] = (winner.position, winner.dead_heat)
    return won, placed


def leg_result(
    kind: ResultKind, winners: dict[str, int], selection_id: str
) -> tuple[LegOutcome, int]:
    """A leg's outcome and dead-heat divisor under a market result (a
    rollback leaves the leg unresolved)."""
    if kind == "void":
        return "void", 1
    if kind == "rollback":
        return "pending", 1
    divisor = winners.get(selection_id)
    if divisor is None:
        return "lost", 1
    return "won", divisor


def place_result(
    kind: ResultKind,
    winners: dict[str, int],
    placed: Placings,
    selection_id: str,
    terms: PlaceTerms,
) -> tuple[LegOutcome, int, int]:
    """An each-way leg's place part: outcome, places paid and runners tied.
    Runners dead-heating across the last place share the places left: two
    tied for third of three places are each paid on half the place stake."""
    if kind == "void":
        return "void", 1, 1
    if kind == "rollback":
        return "pending", 1, 1
    tied = winners.get(selection_id)
    position = 1
    if tied is None:
        placing = placed.get(selection_id)
        if placing is None:
            return "lost", 1, 1
        position, tied = placing
    paid = places_paid(position, tied, terms.places)
    if paid == 0:
        return "lost", 1, 1
    return "won", paid, tied


def market_leg_result(
    leg: PlacedLeg, kind: ResultKind, winners: dict[str, int]
) -> tuple[LegOutcome, int]:
    """`leg_result` for a leg on the resulted market; a leg cancelled by a
    windowed void stays void whatever the market's later results."""
    if leg.cancelled:
        return "void", 1
    return leg_result(kind, winners, leg.selection_id)


def market_place_result(
    leg: PlacedLeg, kind: ResultKind, winners: dict[str, int], placed: Placings
) -> tuple[LegOutcome, int, int]:
    """`place_result` for an each-way leg on the resulted market."""
    if leg.cancelled or leg.place is None:
        return "void", 1, 1
    return place_result(kind, winners, placed, leg.selection_id, leg.place.terms)


def evaluate_bet(
    bet: Bet, market_id: str, kind: ResultKind, winners: dict[str, int], placed: Placings
) -> tuple[BetStatus, int]:
    """The bet's status and payout if `market_id` took this result (its other
    legs keep the outcomes they have).

    An each-way bet is two bets of `stake_minor`: the win part (the legs at
    their win prices) and the place part (at their place prices); the bet
    wins if either part pays, and is lost only when both are."""
    win = _part(bet, market_id, kind, winners, placed, place=False)
    if not bet.each_way:
        return win
    place = _part(bet, market_id, kind, winners, placed, place=True)
    if win[0] == "lost" and place[0] == "lost":
        return "lost", 0
    if "open" in (win[0], place[0]):
        return "open", 0
    if win[0] == place[0] == "void":
        return "void", bet.staked_minor
    payout = win[1] + place[1]
    return ("won" if payout else "lost"), payout


def _part(
    bet: Bet,
    market_id: str,
    kind: ResultKind,
    winners: dict[str, int],
    placed: Placings,
    *,
    place: bool,
) -> tuple[BetStatus, int]:
    """One part of a bet on its stake: any lost leg loses it at once; a void
    leg counts at odds 1.00; every leg void refunds the stake."""
    prices: list[Price] = []
    dead_heats: list[tuple[int, int]] = []
    all_void = True
    pending = False
    for leg in bet.legs:
        on_market = leg.market_id == market_id
        if place:
            if on_market:
                outcome, paid, tied = market_place_result(leg, kind, winners, placed)
            elif leg.place is not None:
                outcome, paid, tied = leg.place.outcome, leg.place.places_paid, leg.place.tied
            else:
                outcome, paid, tied = "void", 1, 1
        else:
            if on_market:
                outcome, tied = market_leg_result(leg, kind, winners)
            else:
                outcome, tied = leg.outcome, leg.dead_heat
            paid = 1
        if outcome == "lost":
            return "lost", 0
        if outcome == "pending":
            pending = True
        elif outcome == "won":
            all_void = False
            price = leg.odds
            if place and leg.place is not None:
                price = place_price(price, leg.place.terms)
            prices.append(price)
            if paid != tied:
                dead_heats.append((paid, tied))
    if pending:
        return "open", 0
    if all_void:
        return "void", bet.stake_minor
    return "won", payout_minor(bet.stake_minor, prices, dead_heats)
