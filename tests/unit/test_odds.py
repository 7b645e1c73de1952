"""Exact odds: notations, ladders, and the one payout rule."""

from __future__ import annotations

from fractions import Fraction
from math import floor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironbook.core.odds import (
    LADDER,
    MAX_ODDS,
    MIN_ODDS,
    InvalidOdds,
    Price,
    as_price,
    combined_price,
    format_american,
    format_decimal,
    format_exact,
    format_fractional,
    format_price,
    from_hundredths,
    hundredths_exact,
    is_on_ladder,
    is_valid_odds,
    is_valid_price,
    longer_price,
    parse_american,
    parse_decimal,
    parse_fractional,
    parse_odds,
    payout_minor,
    same_price,
    snap_to_ladder,
    ticks_away,
)

valid_odds = st.integers(min_value=MIN_ODDS, max_value=MAX_ODDS)
ladder_odds = st.sampled_from(LADDER)


@pytest.mark.parametrize(
    ("text", "price"),
    [
        ("2.5", Price(3, 2, "decimal")),
        ("2.50", Price(3, 2, "decimal")),
        (" 3.05 ", Price(41, 20, "decimal")),
        ("1.01", Price(1, 100, "decimal")),
        ("4.333", Price(3333, 1000, "decimal")),
        ("1000", Price(999, 1, "decimal")),
        ("1000.00", Price(999, 1, "decimal")),
        ("7", Price(6, 1, "decimal")),
    ],
)
def test_parse_decimal(text: str, price: Price) -> None:
    assert parse_decimal(text) == price


@pytest.mark.parametrize(
    "text", ["", "2.", ".5", "2.5055", "1.00", "1", "0.50", "1001.01", "-2.5", "2,5", "abc", "2.5x"]
)
def test_parse_decimal_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "numerator", "denominator"),
    [
        ("5/2", 5, 2),
        ("1/1", 1, 1),
        ("evs", 1, 1),
        ("Evens", 1, 1),
        ("4/6", 2, 3),
        ("2/7", 2, 7),
        ("13/8", 13, 8),
        ("100/30", 10, 3),
        ("10/3", 10, 3),
        ("999/1", 999, 1),
        ("1/100", 1, 100),
    ],
)
def test_parse_fractional_is_exact(text: str, numerator: int, denominator: int) -> None:
    assert parse_fractional(text) == Price(numerator, denominator, "fractional")


@pytest.mark.parametrize(
    "text", ["5/0", "0/1", "1/1000", "1001/1", "5-2", "/2", "5/", "a/b", "evn"]
)
def test_parse_fractional_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_fractional(text)


@pytest.mark.parametrize(
    ("text", "numerator", "denominator"),
    [
        ("+150", 3, 2),
        ("+100", 1, 1),
        ("-100", 1, 1),
        ("-200", 1, 2),
        ("-300", 1, 3),
        ("-110", 10, 11),
        ("-10000", 1, 100),
        ("+99900", 999, 1),
    ],
)
def test_parse_american_is_exact(text: str, numerator: int, denominator: int) -> None:
    assert parse_american(text) == Price(numerator, denominator, "american")


@pytest.mark.parametrize(
    "text", ["150", "+99", "-99", "+", "-", "+1.5", "-20000", "+100001", "±150"]
)
def test_parse_american_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_american(text)


@pytest.mark.parametrize(
    ("text", "style"),
    [("2.50", "decimal"), ("6/4", "fractional"), ("+150", "american"), (" 3/2 ", "fractional")],
)
def test_parse_odds_tells_notations_apart_and_keeps_the_quote(text: str, style: str) -> None:
    price = parse_odds(text)
    assert (price.numerator, price.denominator, price.style) == (3, 2, style)


def test_10_3_and_100_30_are_the_same_exact_price() -> None:
    assert same_price(parse_odds("10/3"), parse_odds("100/30"))
    assert same_price(parse_odds("6/4"), parse_odds("2.5"))
    assert same_price(parse_odds("-110"), parse_odds("10/11"))
    assert not same_price(parse_odds("4.33"), parse_odds("10/3"))
    assert longer_price(parse_odds("10/3"), parse_odds("4.33"))


@pytest.mark.parametrize(
    ("text", "decimal", "fractional", "american"),
    [
        ("2.50", "2.50", "6/4", "+150"),
        ("evs", "2.00", "evs", "+100"),
        ("1/2", "1.50", "1/2", "-200"),
        ("1.01", "1.01", "1/100", "-10000"),
        ("3.05", "3.05", "41/20", "+205"),
        ("1000", "1000.00", "999/1", "+99900"),
        ("10/3", "4.33", "100/30", "+333"),
        ("13/8", "2.62", "13/8", "+163"),
        ("4/6", "1.66", "4/6", "-150"),
        ("-110", "1.90", "10/11", "-110"),
    ],
)
def test_format(text: str, decimal: str, fractional: str, american: str) -> None:
    price = parse_odds(text)
    assert format_decimal(price) == decimal
    assert format_fractional(price) == fractional
    assert format_american(price) == american
    assert format_price(price, "decimal") == decimal
    assert format_price(price, "fractional") == fractional
    assert format_price(price, "american") == american


@given(valid_odds)
def test_hundredths_are_exact_prices(odds: int) -> None:
    price = from_hundredths(odds)
    assert hundredths_exact(price) == odds
    assert 1 + Fraction(price.numerator, price.denominator) == Fraction(odds, 100)
    assert same_price(parse_decimal(format_decimal(odds)), price)
    assert same_price(parse_fractional(format_exact(price)), price)
    assert as_price(odds) == price


@given(st.integers(min_value=1, max_value=999), st.integers(min_value=1, max_value=999))
def test_fractional_prices_are_kept_exactly(num: int, den: int) -> None:
    exact = Fraction(num, den)
    if not Fraction(1, 100) <= exact <= 999:
        return
    price = parse_fractional(f"{num}/{den}")
    assert Fraction(price.numerator, price.denominator) == exact
    assert is_valid_price(price)


# The ladder.


def test_ladder_shape() -> None:
    assert LADDER[0] == MIN_ODDS
    assert LADDER[-1] == MAX_ODDS
    assert len(LADDER) == 350  # Betfair's ladder has 350 prices
    assert list(LADDER) == sorted(set(LADDER))
    steps = {
        (101, 102),
        (199, 200),
        (200, 202),
        (298, 300),
        (300, 305),
        (400, 410),
        (600, 620),
        (1_000, 1_050),
        (2_000, 2_100),
        (3_000, 3_200),
        (5_000, 5_500),
        (10_000, 11_000),
        (99_000, 100_000),
    }
    for price, following in steps:
        assert LADDER[LADDER.index(price) + 1] == following


@pytest.mark.parametrize(
    ("odds", "on_ladder"),
    [(101, True), (150, True), (201, False), (202, True), (303, False), (305, True), (100, False)],
)
def test_is_on_ladder(odds: int, on_ladder: bool) -> None:
    assert is_on_ladder(odds) is on_ladder


@pytest.mark.parametrize(
    ("odds", "down", "up", "nearest"),
    [
        (201, 200, 202, 200),  # a tie snaps down
        (303, 300, 305, 305),
        (302, 300, 305, 300),
        (1_025, 1_000, 1_050, 1_000),
        (1_026, 1_000, 1_050, 1_050),
        (99_999, 99_000, 100_000, 100_000),
        (250, 250, 250, 250),
    ],
)
def test_snap_to_ladder(odds: int, down: int, up: int, nearest: int) -> None:
    assert snap_to_ladder(odds) == down
    assert snap_to_ladder(odds, "down") == down
    assert snap_to_ladder(odds, "up") == up
    assert snap_to_ladder(odds, "nearest") == nearest


@pytest.mark.parametrize("odds", [100, 0, -5, 100_001])
def test_snap_refuses_invalid_odds(odds: int) -> None:
    with pytest.raises(InvalidOdds):
        snap_to_ladder(odds)


@given(valid_odds)
def test_snap_brackets_the_price(odds: int) -> None:
    down, up = snap_to_ladder(odds, "down"), snap_to_ladder(odds, "up")
    nearest = snap_to_ladder(odds, "nearest")
    assert is_on_ladder(down) and is_on_ladder(up)
    assert down <= odds <= up
    assert up == down or LADDER.index(up) == LADDER.index(down) + 1
    assert nearest in (down, up)
    assert abs(nearest - odds) == min(odds - down, up - odds)


@pytest.mark.parametrize(
    ("odds", "ticks", "expected"),
    [
        (200, 1, 202),
        (199, 1, 200),
        (200, -1, 199),
        (300, -3, 294),
        (101, -1, 101),
        (100_000, 1, 100_000),
        (250, 0, 250),
        (101, 10_000, 100_000),
    ],
)
def test_ticks_away(odds: int, ticks: int, expected: int) -> None:
    assert ticks_away(odds, ticks) == expected


def test_ticks_away_needs_a_ladder_price() -> None:
    with pytest.raises(InvalidOdds):
        ticks_away(201, 1)


def test_valid_odds_range() -> None:
    assert not is_valid_odds(100)
    assert is_valid_odds(101)
    assert is_valid_odds(100_000)
    assert not is_valid_odds(100_001)


# Payout: stake × Π(1 + price) × dead heats, rounded down once.


@pytest.mark.parametrize(
    ("quoted", "paid"),
    [
        ("13/8", 26_250),
        ("2/7", 12_857),
        ("8/13", 16_153),
        ("4/9", 14_444),
        ("10/3", 43_333),
        ("100/30", 43_333),
    ],
)
def test_a_100_pound_winning_single_is_paid_exactly(quoted: str, paid: int) -> None:
    assert payout_minor(10_000, [parse_odds(quoted)]) == paid


@pytest.mark.parametrize(
    ("stake", "odds", "dead_heats", "payout"),
    [
        (100, [250], [], 250),
        (333, [250], [], 832),  # 832.5 rounds down
        (1, [199], [], 1),  # 1.99 rounds down
        (100, [150, 150, 150], [], 337),  # 337.5 rounds down
        (1_000, [200, 300], [], 6_000),
        (100, [250], [], 250),
        (101, [300], [(1, 2)], 151),  # dead heat: 151.5 rounds down
        (100, [500], [(1, 3)], 166),
        (100, [400, 300], [(1, 2), (1, 2)], 300),
        (100, [500], [(2, 3)], 333),  # three tied for the last two places
        (0, [500], [], 0),
    ],
)
def test_payout_rounds_down(
    stake: int, odds: list[int], dead_heats: list[tuple[int, int]], payout: int
) -> None:
    assert payout_minor(stake, [from_hundredths(o) for o in odds], dead_heats) == payout


def test_payout_rounds_once_not_per_leg() -> None:
    # 13/8 twice: 100 × 2.625 × 2.625 = 689.0625. Rounding each leg to the
    # penny or to hundredths first would pay 688 or less.
    price = parse_odds("13/8")
    assert payout_minor(100, [price, price]) == 689


fractional_legs = st.builds(
    Price,
    st.integers(min_value=1, max_value=1_000),
    st.integers(min_value=1, max_value=1_000),
    st.just("fractional"),
).filter(is_valid_price)
decimal_legs = st.builds(from_hundredths, valid_odds)
exact_decimal_legs = st.integers(min_value=1_010, max_value=1_000_000).map(
    lambda thousandths: parse_decimal(f"{thousandths // 1000}.{thousandths % 1000:03d}")
)


@given(
    st.integers(min_value=0, max_value=10**9),
    st.lists(st.one_of(fractional_legs, decimal_legs, exact_decimal_legs), min_size=1, max_size=12),
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=8)),
        max_size=3,
    ),
)
def test_payout_is_the_floor_of_the_exact_product(
    stake: int, prices: list[Price], dead_heats: list[tuple[int, int]]
) -> None:
    product = Fraction(1)
    for price in prices:
        product *= 1 + Fraction(price.numerator, price.denominator)
    exact = stake * product
    for paid, tied in dead_heats:
        exact *= Fraction(paid, tied)
    assert payout_minor(stake, prices, dead_heats) == floor(exact)
    combined = combined_price(prices)
    assert 1 + Fraction(combined.numerator, combined.denominator) == product


# Only ASCII digits make a price: other Unicode digits pass `str.isdigit`, and
# `int` refuses some of them with a bare ValueError and quietly reads others.


@pytest.mark.parametrize("text", ["²", "٣.50", "¹/2", "+١٥٠", "9" * 5_000])
def test_parse_odds_refuses_non_ascii_and_huge_digits_with_invalid_odds(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_odds(text)
