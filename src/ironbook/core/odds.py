"""Exact odds, price ladders, and the one payout rule.

A price is a `Price`: the profit on a stake of one as an exact fraction in
lowest terms (13/8, 3/2 for decimal 2.50, 10/11 for American -110), with the
notation it was quoted in. Nothing about a price is ever rounded; money is
rounded once, down to the minor unit, by `payout_minor`.

On the wire an odds field is an `Odds`: a `Price`, or an integer count of
hundredths of decimal odds (2.50 is 250). The integer form is the first
encoding of a price, still read in old logs and accepted from callers that
quote decimal odds; it is exact too, and `as_price` turns it into a `Price`.

A market declares its `Ladder`: the prices a trader or feed may set on it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from math import gcd
from typing import Literal

import msgspec

ODDS_SCALE = 100
MIN_ODDS = 101
MAX_ODDS = 100_000
_MAX_TERM = 10**7
"""Bound on a price's numerator and denominator: no quoted price needs more."""

PriceStyle = Literal["fractional", "decimal", "american"]


class Price(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Exact odds: profit `numerator`/`denominator` per unit staked, in lowest
    terms, and the notation it was quoted in. Two prices are the same price
    when their fractions are equal, whatever their styles (`same_price`)."""

    numerator: int
    denominator: int
    style: PriceStyle = "decimal"


Odds = int | Price
"""An odds field on the wire: a `Price`, or decimal odds in hundredths."""


class InvalidOdds(ValueError):
    """A price string or value that is not a valid price."""


def _price(numerator: int, denominator: int, style: PriceStyle) -> Price:
    divisor = gcd(numerator, denominator)
    return Price(numerator // divisor, denominator // divisor, style)


_FROM_HUNDREDTHS: dict[int, Price] = {}


def from_hundredths(odds: int) -> Price:
    """Decimal odds in hundredths (250) as an exact `Price` (3/2, decimal)."""
    price = _FROM_HUNDREDTHS.get(odds)
    if price is None:
        price = _price(odds - ODDS_SCALE, ODDS_SCALE, "decimal")
        if MIN_ODDS <= odds <= MAX_ODDS:
            _FROM_HUNDREDTHS[odds] = price
    return price


def as_price(odds: Odds) -> Price:
    if isinstance(odds, int):
        return _FROM_HUNDREDTHS.get(odds) or from_hundredths(odds)
    return odds


MAX_PROFIT = 1_000
"""The longest price: 1000/1 (decimal 1001), the top of the UK ladder."""


def is_valid_price(price: Price) -> bool:
    """Any exact price a bettor may be quoted, in lowest terms: 1/100 (decimal
    1.01) to 1000/1."""
    numerator, denominator = price.numerator, price.denominator
    return (
        0 < numerator < _MAX_TERM
        and 0 < denominator < _MAX_TERM
        and ODDS_SCALE * numerator >= denominator
        and numerator <= MAX_PROFIT * denominator
        and gcd(numerator, denominator) == 1
    )


def same_price(a: Price, b: Price) -> bool:
    return a.numerator * b.denominator == b.numerator * a.denominator


def longer_price(a: Price, b: Price) -> bool:
    """`a` pays more than `b`."""
    return a.numerator * b.denominator > b.numerator * a.denominator


def hundredths_exact(price: Price) -> int | None:
    """The price as decimal hundredths, if it is a whole number of them."""
    whole, rest = divmod(ODDS_SCALE * (price.numerator + price.denominator), price.denominator)
    return None if rest else whole


# The one payout rule.


def payout_minor(
    stake_minor: int, prices: Sequence[Price], dead_heats: Sequence[tuple[int, int]] = ()
) -> int:
    """The one payout rule: stake × Π(1 + price) × Π(paid ÷ tied), computed
    exactly and rounded down to the minor unit once. A void accumulator leg is
    left out (it counts as a return of the stake); a dead heat is
    (places paid, runners tied): (1, 2) halves a win, (1, 2) for the last
    place halves a place."""
    if len(prices) == 1 and not dead_heats:
        # A single: the hot path of bet placement.
        price = prices[0]
        return stake_minor * (price.numerator + price.denominator) // price.denominator
    numerator = stake_minor
    denominator = 1
    for price in prices:
        numerator *= price.numerator + price.denominator
        denominator *= price.denominator
    for paid, tied in dead_heats:
        numerator *= paid
        denominator *= tied
    return numerator // denominator


def combined_price(prices: Sequence[Price]) -> Price:
    """An accumulator's legs as one exact price (Π(1 + price) − 1)."""
    numerator = denominator = 1
    for price in prices:
        numerator *= price.numerator + price.denominator
        denominator *= price.denominator
    return _price(numerator - denominator, denominator, prices[0].style)


# Each-way place terms.


class PlaceTerms(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Each-way terms: the place part is paid at `fraction_numerator` /
    `fraction_denominator` of the win odds if the runner finishes in the
    first `places`."""

    fraction_numerator: int
    fraction_denominator: int
    places: int


MAX_PLACES = 10


def valid_place_terms(terms: PlaceTerms) -> bool:
    return (
        0 < terms.fraction_numerator <= terms.fraction_denominator <= 10
        and 1 <= terms.places <= MAX_PLACES
    )


def place_price(price: Price, terms: PlaceTerms) -> Price:
    """The place part's exact price: the win price times the terms' fraction."""
    return _price(
        price.numerator * terms.fraction_numerator,
        price.denominator * terms.fraction_denominator,
        price.style,
    )


def places_paid(position: int, tied: int, places: int) -> int:
    """Of `tied` runners dead-heating for `position`, how many places they
    share out of the first `places` (0: none of them is placed)."""
    return max(0, min(tied, places - position + 1))


def potential_payout_minor(
    stake_minor: int, prices: Sequence[Price], place_terms: Sequence[PlaceTerms] = ()
) -> int:
    """The most a bet can return (every leg wins): its win part, plus, for an
    each-way bet (`place_terms` per leg), its place part."""
    payout = payout_minor(stake_minor, prices)
    if place_terms:
        place_prices = [place_price(p, t) for p, t in zip(prices, place_terms, strict=True)]
        payout += payout_minor(stake_minor, place_prices)
    return payout


# Ladders.

LadderKind = Literal["exchange", "fractional", "decimal"]


class Ladder(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The prices a market may be quoted at, and how it shows them.

    `exchange`: the Betfair exchange ladder (`EXCHANGE_LADDER`); `fractional`:
    the UK bookmaker ladder (`FRACTIONAL_LADDER`); `decimal`: any decimal price
    1.01..1000 that is a whole number of `tick_hundredths`."""

    kind: LadderKind = "exchange"
    display: PriceStyle = "decimal"
    tick_hundredths: int = 1


def valid_ladder(ladder: Ladder) -> bool:
    return 1 <= ladder.tick_hundredths <= 100 and (
        ladder.kind == "decimal" or ladder.tick_hundredths == 1
    )


# Betfair exchange ladder bands: (from, to, tick), all in hundredths.
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
"""The exchange ladder, in hundredths of decimal odds."""
EXCHANGE_LADDER = LADDER
_LADDER_SET = frozenset(LADDER)

FRACTIONAL_LADDER: tuple[str, ...] = (
    "1/5",
    "2/9",
    "1/4",
    "2/7",
    "3/10",
    "1/3",
    "4/11",
    "2/5",
    "4/9",
    "1/2",
    "8/15",
    "4/7",
    "8/13",
    "4/6",
    "8/11",
    "4/5",
    "5/6",
    "10/11",
    "evs",
    "11/10",
    "6/5",
    "5/4",
    "11/8",
    "6/4",
    "13/8",
    "7/4",
    "15/8",
    "2/1",
    "9/4",
    "5/2",
    "11/4",
    "3/1",
    "100/30",
    "7/2",
    "4/1",
    "9/2",
    "5/1",
    "11/2",
    "6/1",
    "13/2",
    "7/1",
    "15/2",
    "8/1",
    "17/2",
    "9/1",
    "10/1",
    "11/1",
    "12/1",
    "14/1",
    "16/1",
    "18/1",
    "20/1",
    "22/1",
    "25/1",
    "28/1",
    "33/1",
    "40/1",
    "50/1",
    "66/1",
    "80/1",
    "100/1",
    "125/1",
    "150/1",
    "200/1",
    "250/1",
    "300/1",
    "400/1",
    "500/1",
    "750/1",
    "1000/1",
)
"""The UK bookmaker ladder, shortest to longest, as bookmakers write it."""


def _fractional_ladder() -> dict[tuple[int, int], str]:
    prices: dict[tuple[int, int], str] = {}
    for text in FRACTIONAL_LADDER:
        numerator, _, denominator = ("1/1" if text == "evs" else text).partition("/")
        price = _price(int(numerator), int(denominator), "fractional")
        prices[price.numerator, price.denominator] = text
    return prices


_FRACTIONAL_LADDER = _fractional_ladder()
"""(numerator, denominator) in lowest terms -> how the ladder writes it."""


def is_on_ladder(odds: int) -> bool:
    """`odds` (hundredths) is on the exchange ladder."""
    return odds in _LADDER_SET


def on_market_ladder(price: Price, ladder: Ladder) -> bool:
    """`price` is one of the prices `ladder` allows (compared exactly)."""
    if ladder.kind == "fractional":
        return (price.numerator, price.denominator) in _FRACTIONAL_LADDER
    odds = hundredths_exact(price)
    if odds is None:
        return False
    if ladder.kind == "exchange":
        return odds in _LADDER_SET
    return MIN_ODDS <= odds <= ODDS_SCALE * (MAX_PROFIT + 1) and odds % ladder.tick_hundredths == 0


def ladder_allows(odds: Odds, ladder: Ladder) -> bool:
    """`odds` is a valid price on `ladder` (hundredths on the exchange ladder
    are looked up directly: the feed's hot path)."""
    if isinstance(odds, int):
        if ladder.kind == "exchange":
            return odds in _LADDER_SET
        odds = from_hundredths(odds)
    return is_valid_price(odds) and on_market_ladder(odds, ladder)


def is_valid_odds(odds: int) -> bool:
    """Any decimal price in hundredths a bettor may request: 1.01 to 1000.00."""
    return MIN_ODDS <= odds <= MAX_ODDS


def snap_to_ladder(odds: int, mode: Literal["down", "up", "nearest"] = "down") -> int:
    """The exchange-ladder tick at or below (`down`), at or above (`up`) or
    nearest to `odds` (hundredths)."""
    if not is_valid_odds(odds):
        raise InvalidOdds(f"odds {odds / ODDS_SCALE:.2f} are outside 1.01..1000")
    index = bisect.bisect_left(LADDER, odds)
    if LADDER[index] == odds:
        return odds
    above, below = LADDER[index], LADDER[index - 1]
    if mode == "down":
        return below
    if mode == "up":
        return above
    return below if odds - below <= above - odds else above


def ticks_away(odds: Odds, ticks: int) -> int:
    """The exchange-ladder price (hundredths) `ticks` steps above (positive)
    or below (negative) `odds`, clamped to the ends of the ladder."""
    if isinstance(odds, Price):
        odds = hundredths_exact(odds) or 0
    if not is_on_ladder(odds):
        raise InvalidOdds(f"odds {odds / ODDS_SCALE:.2f} are not on the ladder")
    index = LADDER.index(odds) + ticks
    return LADDER[max(0, min(len(LADDER) - 1, index))]


# Notations.

_MAX_DIGITS = 7


def _digits(text: str) -> bool:
    """ASCII digits only (`str.isdigit` admits '²' and Arabic-Indic digits),
    and few enough that no valid price is refused and no huge number parsed."""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


def _checked(price: Price, text: str) -> Price:
    if not is_valid_price(price):
        raise InvalidOdds(f"{text!r} is outside 1/100..1000/1 (decimal 1.01..1001)")
    return price


def parse_decimal(text: str) -> Price:
    """'2.5' or '2.50' -> 3/2. At most three decimal places; 1.01..1000."""
    text = text.strip()
    whole, dot, frac = text.partition(".")
    if not _digits(whole) or (dot and (not _digits(frac) or len(frac) > 3)):
        raise InvalidOdds(f"{text!r} is not a decimal price like '2.50'")
    scale = 10 ** len(frac)
    total = int(whole) * scale + (int(frac) if dot else 0)
    return _checked(_price(total - scale, scale, "decimal"), text)


def parse_fractional(text: str) -> Price:
    """'5/2' -> 5/2, '100/30' -> 10/3, 'evs' -> 1/1. Exact."""
    text = text.strip().lower()
    if text in ("evs", "evens"):
        return Price(1, 1, "fractional")
    numerator, slash, denominator = text.partition("/")
    if not (slash and _digits(numerator) and _digits(denominator)) or int(denominator) == 0:
        raise InvalidOdds(f"{text!r} is not a fractional price like '5/2'")
    if int(numerator) == 0:
        raise InvalidOdds(f"{text!r} is outside 1/100..1000/1 (decimal 1.01..1001)")
    return _checked(_price(int(numerator), int(denominator), "fractional"), text)


def parse_american(text: str) -> Price:
    """'+150' -> 3/2, '-110' -> 10/11. Exact."""
    text = text.strip()
    sign, digits = text[:1], text[1:]
    if sign not in ("+", "-") or not _digits(digits) or int(digits) < 100:
        raise InvalidOdds(f"{text!r} is not an American price like '+150' or '-200'")
    value = int(digits)
    if sign == "+":
        return _checked(_price(value, ODDS_SCALE, "american"), text)
    return _checked(_price(ODDS_SCALE, value, "american"), text)


def parse_odds(text: str) -> Price:
    """Any of the three notations, told apart by their shape."""
    stripped = text.strip()
    if stripped[:1] in ("+", "-"):
        return parse_american(stripped)
    if "/" in stripped or stripped.lower() in ("evs", "evens"):
        return parse_fractional(stripped)
    return parse_decimal(stripped)


def format_decimal(odds: Odds) -> str:
    """Decimal odds to two places ('2.50'); a price that is not a whole
    number of hundredths shows rounded down ('4.33' for 10/3)."""
    price = as_price(odds)
    hundredths = ODDS_SCALE * (price.numerator + price.denominator) // price.denominator
    whole, rest = divmod(hundredths, ODDS_SCALE)
    return f"{whole}.{rest:02d}"


def format_fractional(odds: Odds) -> str:
    """'13/8', 'evs' and '100/30' as the UK ladder writes them, else 'n/d'."""
    price = as_price(odds)
    written = _FRACTIONAL_LADDER.get((price.numerator, price.denominator))
    if written is not None:
        return written
    return f"{price.numerator}/{price.denominator}"


def format_american(odds: Odds) -> str:
    """'+150', '-110'; a price that is not a whole American number shows
    rounded half up."""
    price = as_price(odds)
    numerator, denominator = price.numerator, price.denominator
    if numerator >= denominator:
        return f"+{(2 * ODDS_SCALE * numerator + denominator) // (2 * denominator)}"
    return f"-{(2 * ODDS_SCALE * denominator + numerator) // (2 * numerator)}"


def format_price(odds: Odds, style: PriceStyle) -> str:
    if style == "fractional":
        return format_fractional(odds)
    if style == "american":
        return format_american(odds)
    return format_decimal(odds)


def format_exact(odds: Odds) -> str:
    """The exact price as 'n/d' in lowest terms: what the ledger pays on."""
    price = as_price(odds)
    return f"{price.numerator}/{price.denominator}"
