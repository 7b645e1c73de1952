"""Odds notation, the price ladder, and the one payout rule."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironbook.core.odds import (
    LADDER,
    MAX_ODDS,
    MIN_ODDS,
    InvalidOdds,
    format_american,
    format_decimal,
    format_fractional,
    is_on_ladder,
    is_valid_odds,
    parse_american,
    parse_decimal,
    parse_fractional,
    parse_odds,
    payout_minor,
    snap_to_ladder,
    ticks_away,
)

valid_odds = st.integers(min_value=MIN_ODDS, max_value=MAX_ODDS)
ladder_odds = st.sampled_from(LADDER)


@pytest.mark.parametrize(
    ("text", "odds"),
    [
        ("2.5", 250),
        ("2.50", 250),
        (" 3.05 ", 305),
        ("1.01", 101),
        ("1000", 100_000),
        ("1000.00", 100_000),
        ("7", 700),
    ],
)
def test_parse_decimal(text: str, odds: int) -> None:
    assert parse_decimal(text) == odds


@pytest.mark.parametrize(
    "text", ["", "2.", ".5", "2.505", "1.00", "1", "0.50", "1000.01", "-2.5", "2,5", "abc", "2.5x"]
)
def test_parse_decimal_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "odds"),
    [
        ("5/2", 350),
        ("1/1", 200),
        ("evs", 200),
        ("Evens", 200),
        ("1/2", 150),
        ("4/6", 166),  # 1.666… rounds down
        ("1/3", 133),  # 1.333… rounds down
        ("2/7", 128),  # 1.2857… rounds down
        ("100/30", 433),  # 4.333… rounds down
        ("999/1", 100_000),
    ],
)
def test_parse_fractional_rounds_down(text: str, odds: int) -> None:
    assert parse_fractional(text) == odds


@pytest.mark.parametrize(
    "text", ["5/0", "0/1", "1/1000", "1000/1", "5-2", "/2", "5/", "a/b", "evn"]
)
def test_parse_fractional_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_fractional(text)


@pytest.mark.parametrize(
    ("text", "odds"),
    [
        ("+150", 250),
        ("+100", 200),
        ("-100", 200),
        ("-200", 150),
        ("-300", 133),  # 1.333… rounds down
        ("-110", 190),  # 1.909… rounds down
        ("-10000", 101),
        ("+99900", 100_000),
    ],
)
def test_parse_american(text: str, odds: int) -> None:
    assert parse_american(text) == odds


@pytest.mark.parametrize(
    "text", ["150", "+99", "-99", "+", "-", "+1.5", "-20000", "+99901", "±150"]
)
def test_parse_american_refuses(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_american(text)


@pytest.mark.parametrize(
    ("text", "odds"),
    [("2.50", 250), ("5/2", 350), ("evs", 200), ("+150", 250), ("-200", 150), (" 11/10 ", 210)],
)
def test_parse_odds_tells_notations_apart(text: str, odds: int) -> None:
    assert parse_odds(text) == odds


@pytest.mark.parametrize(
    ("odds", "decimal", "fractional", "american"),
    [
        (250, "2.50", "3/2", "+150"),
        (200, "2.00", "1/1", "+100"),
        (150, "1.50", "1/2", "-200"),
        (101, "1.01", "1/100", "-10000"),
        (305, "3.05", "41/20", "+205"),
        (100_000, "1000.00", "999/1", "+99900"),
    ],
)
def test_format(odds: int, decimal: str, fractional: str, american: str) -> None:
    assert format_decimal(odds) == decimal
    assert format_fractional(odds) == fractional
    assert format_american(odds) == american


@given(valid_odds)
def test_decimal_and_fractional_roundtrip_exactly(odds: int) -> None:
    assert parse_decimal(format_decimal(odds)) == odds
    assert parse_fractional(format_fractional(odds)) == odds


@given(valid_odds)
def test_american_roundtrip_never_promises_more(odds: int) -> None:
    back = parse_american(format_american(odds))
    if odds >= 200:
        assert back == odds
    else:
        assert odds - 2 <= back <= odds


@given(st.integers(min_value=1, max_value=999), st.integers(min_value=1, max_value=999))
def test_fractional_conversion_is_the_floor_of_the_exact_price(num: int, den: int) -> None:
    exact = 1 + Fraction(num, den)
    if not Fraction(101, 100) <= exact <= 1000:
        return
    odds = parse_fractional(f"{num}/{den}")
    assert Fraction(odds, 100) <= exact < Fraction(odds + 1, 100)


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


# Payout: stake × odds rounded down to the minor unit.


@pytest.mark.parametrize(
    ("stake", "odds", "divisors", "payout"),
    [
        (100, [250], [], 250),
        (333, [250], [], 832),  # 832.5 rounds down
        (1, [199], [], 1),  # 1.99 rounds down
        (100, [150, 150, 150], [], 337),  # 337.5 rounds down
        (1_000, [200, 300], [], 6_000),
        (100, [250, 100], [], 250),  # a void leg counts at 1.00
        (100, [100, 100], [], 100),
        (101, [300], [2], 151),  # dead heat: 151.5 rounds down
        (100, [500], [3], 166),
        (100, [400, 300], [2, 2], 300),
        (0, [500], [], 0),
    ],
)
def test_payout_rounds_down(stake: int, odds: list[int], divisors: list[int], payout: int) -> None:
    assert payout_minor(stake, odds, divisors) == payout


@given(
    st.integers(min_value=0, max_value=10**9),
    st.lists(valid_odds, min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=8), max_size=3),
)
def test_payout_is_the_floor_of_the_exact_product(
    stake: int, odds: list[int], divisors: list[int]
) -> None:
    exact = Fraction(stake)
    for price in odds:
        exact *= Fraction(price, 100)
    for divisor in divisors:
        exact /= divisor
    payout = payout_minor(stake, odds, divisors)
    assert payout <= exact < payout + 1


# Only ASCII digits make a price: other Unicode digits pass `str.isdigit`, and
# `int` refuses some of them with a bare ValueError and quietly reads others.


@pytest.mark.parametrize("text", ["²", "٣.50", "¹/2", "+١٥٠", "9" * 5_000])
def test_parse_odds_refuses_non_ascii_and_huge_digits_with_invalid_odds(text: str) -> None:
    with pytest.raises(InvalidOdds):
        parse_odds(text)
