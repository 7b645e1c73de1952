"""Cash-out: what the book pays now to settle an open bet early.

The value of a bet's stake is its return at the prices it was struck at,
scaled by how likely that return now looks from the current prices, less the
book's margin, rounded down once:

    stake × Σ parts Π legs f(leg) × (1 − margin)

with, per part (the win part, and the place part of an each-way bet), f = 0
for a lost leg, 1 for a void one, (1 + price) × dead heat for a leg already
won, and (1 + price struck) ÷ (1 + price now) for a leg still to run. A quote
is refused while any leg still to run is on a market that takes no bets
(suspended, closed, its producer down) or is in play with a bet delay: the
price could be stale by more than the delay that protects the book.

A quote is not stored: its id names the bet's stake, the stake cashed out,
the amount and the expiry, and accepting it recomputes the value at the log's
time. It stands only if that value is still the amount quoted and the expiry
is not past, so a quote pays at most once: after a cash-out the bet's stake
(in the id) has changed.
"""

from __future__ import annotations

from fractions import Fraction
from math import floor

from ironbook.core.events import Refusal
from ironbook.core.odds import Price, place_price
from ironbook.core.outcomes import RejectionCode as R
from ironbook.core.state import Bet, LedgerState

BASIS_POINTS = 10_000


def _return(price: Price) -> Fraction:
    return 1 + Fraction(price.numerator, price.denominator)


def cash_out_refusal(state: LedgerState, bet: Bet, account_id: str) -> Refusal | None:
    """Why `account_id` cannot cash out `bet` now, or None."""
    if bet.account_id != account_id:
        return Refusal(code=R.UNKNOWN_BET, message=f"no bet {bet.bet_id!r} on this account")
    if bet.status != "open":
        return Refusal(
            code=R.CASH_OUT_UNAVAILABLE, message=f"bet {bet.bet_id!r} is {bet.status}, not open"
        )
    for leg in bet.legs:
        if leg.outcome != "pending":
            continue
        market = state.markets[leg.market_id]
        if market.status != "open" or (market.producer and market.producer in state.producers_down):
            return Refusal(
                code=R.CASH_OUT_UNAVAILABLE,
                message=f"market {leg.market_id!r} is not open: no cash-out until it is",
            )
        if market.in_play and market.bet_delay_s:
            return Refusal(
                code=R.CASH_OUT_UNAVAILABLE,
                message=f"market {leg.market_id!r} is in play with a bet delay: no cash-out",
            )
    return None


def cash_out_stake_refusal(state: LedgerState, bet: Bet, stake_minor: int) -> Refusal | None:
    """Why `stake_minor` (per part) of the bet cannot be cashed out: all of
    the stake, or a part that leaves at least the minimum stake running."""
    remaining_minor = bet.stake_minor - stake_minor
    if stake_minor < 1 or remaining_minor < 0:
        return Refusal(code=R.INVALID_AMOUNT, message=f"cash out 1..{bet.stake_minor} of the stake")
    if 0 < remaining_minor < state.config.min_stake_minor:
        return Refusal(
            code=R.STAKE_TOO_LOW,
            message=f"a partial cash-out must leave at least {state.config.min_stake_minor}",
        )
    return None


def cash_out_value_minor(state: LedgerState, bet: Bet, stake_minor: int) -> int:
    """What cashing out `stake_minor` of the bet's stake (per part) pays now.
    The bet must pass `cash_out_refusal`."""
    total = Fraction(0)
    for place in (False, True) if bet.each_way else (False,):
        part = Fraction(1)
        for leg in bet.legs:
            part_of_leg = leg.place if place else None
            struck, outcome, paid, tied = leg.odds, leg.outcome, 1, leg.dead_heat
            if part_of_leg is not None:
                struck = place_price(leg.odds, part_of_leg.terms)
                outcome, paid, tied = part_of_leg.outcome, part_of_leg.places_paid, part_of_leg.tied
            if outcome == "lost":
                part = Fraction(0)
                break
            if outcome == "won":
                part *= _return(struck) * Fraction(paid, tied)
            elif outcome == "pending":
                now = state.markets[leg.market_id].selections[leg.selection_id].odds
                if part_of_leg is not None:
                    now = place_price(now, part_of_leg.terms)
                part *= _return(struck) / _return(now)
        total += part
    margin = Fraction(BASIS_POINTS - state.config.cash_out_margin_bp, BASIS_POINTS)
    return floor(stake_minor * total * margin)


def quote_id(bet: Bet, stake_minor: int, amount_minor: int, expires_ms: int) -> str:
    return f"{bet.bet_id}:{bet.stake_minor}:{stake_minor}:{amount_minor}:{expires_ms}"


def quote_expiry_ms(quote: str, bet: Bet, stake_minor: int, amount_minor: int) -> int | None:
    """The expiry a quote id names, if it quotes `amount_minor` for cashing
    out `stake_minor` of the bet as it stands; else None."""
    prefix = f"{bet.bet_id}:{bet.stake_minor}:{stake_minor}:{amount_minor}:"
    expires = quote.removeprefix(prefix)
    if expires == quote or not (0 < len(expires) <= 19 and expires.isascii() and expires.isdigit()):
        return None
    return int(expires)
