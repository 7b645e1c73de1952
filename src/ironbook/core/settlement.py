"""Settlement rules shared by `decide` (which computes a result) and `apply`
(which records it): what a market result means for one leg, and for a bet."""

from __future__ import annotations

from ironbook.core.events import BetStatus, LegOutcome, ResultKind
from ironbook.core.odds import Price, payout_minor
from ironbook.core.state import Bet, PlacedLeg


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


def market_leg_result(
    leg: PlacedLeg, kind: ResultKind, winners: dict[str, int]
) -> tuple[LegOutcome, int]:
    """`leg_result` for a leg on the resulted market; a leg cancelled by a
    windowed void stays void whatever the market's later results."""
    if leg.cancelled:
        return "void", 1
    return leg_result(kind, winners, leg.selection_id)


def evaluate_bet(
    bet: Bet, market_id: str, kind: ResultKind, winners: dict[str, int]
) -> tuple[BetStatus, int]:
    """The bet's status and payout if `market_id` took this result (its other
    legs keep the outcomes they have). Any lost leg loses the bet at once; a
    void leg counts at odds 1.00; a bet whose every leg is void is refunded."""
    prices: list[Price] = []
    dead_heats: list[tuple[int, int]] = []
    all_void = True
    pending = False
    for leg in bet.legs:
        if leg.market_id == market_id:
            outcome, dead_heat = market_leg_result(leg, kind, winners)
        else:
            outcome, dead_heat = leg.outcome, leg.dead_heat
        if outcome == "lost":
            return "lost", 0
        if outcome == "pending":
            pending = True
        elif outcome == "won":
            all_void = False
            prices.append(leg.odds)
            if dead_heat != 1:
                dead_heats.append((1, dead_heat))
    if pending:
        return "open", 0
    if all_void:
        return "void", bet.stake_minor
    return "won", payout_minor(bet.stake_minor, prices, dead_heats)
