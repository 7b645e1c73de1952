"""Exact odds, the price ladder, and the one payout rule.

Odds are decimal odds held as an integer count of hundredths: 2.50 is 250.
Fractional and American prices convert to that form; a conversion that is not
exact rounds *down* to the hundredth, so a bettor is never promised more than
the price they were quoted.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

ODDS_SCALE = 100
MIN_ODDS = 101
MAX_ODDS = 100_000

# Betfair-style ladder bands: (from, to, tick), all in hundredths.
_LADDER_BANDS: tuple[tuple[int, int, int], ...] = (
    (101, 200, 1),
    (200, 300, 2),
    (300, 400, 5),
    (400, 600, 10),
    (600, 1_000, 20),
    (1_000, 2_000, 50),
    (2_000, 3_000, 100),
    (3_000, 5_000, 200),
    (5_000, 10_000, 500),
    (10_000, 100_000, 1_000),
)


def _build_ladder() -> tuple[int, ...]:
    ticks: list[int] = []
    for start, stop, step in _LADDER_BANDS:
        ticks.extend(range(start, stop, step))
    ticks.append(MAX_ODDS)
    return tuple(ticks)


LADDER: tuple[int, ...] = _build_ladder()
_LADDER_SET = frozenset(LADDER)


class InvalidOdds(ValueError):
    """A price string or value that is not a valid price."""


_MAX_DIGITS = 7


def _digits(text: str) -> bool:
    """ASCII digits only (`str.isdigit` admits '²' and Arabic-Indic digits),
    and few enough that no valid price is refused and no huge number parsed."""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


def is_valid_odds(odds: int) -> bool:
    """Any exact decimal price a bettor may request: 1.01 to 1000.00."""
    return MIN_ODDS <= odds <= MAX_ODDS


def is_on_ladder(odds: int) -> bool:
    return odds in _LADDER_SET


def snap_to_ladder(odds: int, mode: Literal["down", "up", "nearest"] = "down") -> int:
    """The ladder tick at or below (`down`), at or above (`up`) or nearest to `odds`."""
    if not is_valid_odds(odds):
        raise InvalidOdds(f"odds {format_decimal(odds)} are outside 1.01..1000")
    index = bisect.bisect_left(LADDER, odds)
    if LADDER[index] == odds:
        return odds
    above, below = LADDER[index], LADDER[index - 1]
    if mode == "down":
        return below
    if mode == "up":
        return above
    return below if odds - below <= above - odds else above


def ticks_away(odds: int, ticks: int) -> int:
    """The ladder price `ticks` steps above (positive) or below (negative) `odds`,
    clamped to the ends of the ladder. `odds` must be on the ladder."""
    if not is_on_ladder(odds):
        raise InvalidOdds(f"odds {format_decimal(odds)} are not on the ladder")
    index = LADDER.index(odds) + ticks
    return LADDER[max(0, min(len(LADDER) - 1, index))]


def parse_decimal(text: str) -> int:
    """'2.5' or '2.50' -> 250. At most two decimal places; 1.01..1000."""
    text = text.strip()
    whole, dot, frac = text.partition(".")
    if not _digits(whole) or (dot and (not _digits(frac) or len(frac) > 2)):
        raise InvalidOdds(f"{text!r} is not a decimal price like '2.50'")
    odds = int(whole) * ODDS_SCALE + int(frac.ljust(2, "0") if dot else 0)
    if not is_valid_odds(odds):
        raise InvalidOdds(f"{text!r} is outside 1.01..1000")
    return odds


def parse_fractional(text: str) -> int:
    """'5/2' -> 350, 'evs' -> 200. Inexact conversions round down."""
    text = text.strip().lower()
    if text in ("evs", "evens"):
        return 2 * ODDS_SCALE
    numerator, slash, denominator = text.partition("/")
    if not (slash and _digits(numerator) and _digits(denominator)) or int(denominator) == 0:
        raise InvalidOdds(f"{text!r} is not a fractional price like '5/2'")
    odds = ODDS_SCALE + int(numerator) * ODDS_SCALE // int(denominator)
    if not is_valid_odds(odds):
        raise InvalidOdds(f"{text!r} is outside 1.01..1000")
    return odds


def parse_american(text: str) -> int:
    """'+150' -> 250, '-200' -> 150. Inexact conversions round down."""
    text = text.strip()
    sign, digits = text[:1], text[1:]
    if sign not in ("+", "-") or not _digits(digits) or int(digits) < 100:
        raise InvalidOdds(f"{text!r} is not an American price like '+150' or '-200'")
    value = int(digits)
    if sign == "+":
        odds = ODDS_SCALE + value
    else:
        odds = ODDS_SCALE + ODDS_SCALE * ODDS_SCALE // value
    if not is_valid_odds(odds):
        raise InvalidOdds(f"{text!r} is outside 1.01..1000")
    return odds


def parse_odds(text: str) -> int:
    """Any of the three notations, told apart by their shape."""
    stripped = text.strip()
    if stripped[:1] in ("+", "-"):
        return parse_american(stripped)
    if "/" in stripped or stripped.lower() in ("evs", "evens"):
        return parse_fractional(stripped)
    return parse_decimal(stripped)


def format_decimal(odds: int) -> str:
    whole, hundredths = divmod(odds, ODDS_SCALE)
    return f"{whole}.{hundredths:02d}"


def format_fractional(odds: int) -> str:
    fraction = Fraction(odds - ODDS_SCALE, ODDS_SCALE)
    return f"{fraction.numerator}/{fraction.denominator}"


def format_american(odds: int) -> str:
    if odds >= 2 * ODDS_SCALE:
        return f"+{odds - ODDS_SCALE}"
    # Round half up, in integers: 10000 / (odds - 100).
    divisor = odds - ODDS_SCALE
    return f"-{(2 * ODDS_SCALE * ODDS_SCALE + divisor) // (2 * divisor)}"


def payout_minor(
    stake_minor: int, odds: Sequence[int], dead_heat_divisors: Sequence[int] = ()
) -> int:
    """The one payout rule: stake × Π(odds) ÷ Π(dead-heat divisors), rounded
    down to the minor unit. A void accumulator leg is passed as odds 1.00."""
    numerator = stake_minor
    denominator = 1
    for leg_odds in odds:
        numerator *= leg_odds
        denominator *= ODDS_SCALE
    for divisor in dead_heat_divisors:
        denominator *= divisor
    return numerator // denominator
