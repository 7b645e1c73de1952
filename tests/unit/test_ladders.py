"""Price ladders per market: traders and feeds quote on the market's ladder,
compared exactly; off-ladder trader quotes are refused with `off_ladder`,
feeds skip such items."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    CreateMarket,
    FeedBatch,
    FeedMarket,
    FeedReply,
    SelectionPrice,
    SelectionSpec,
    UpdatePrices,
)
from ironbook.core.odds import (
    FRACTIONAL_LADDER,
    Ladder,
    Odds,
    Price,
    format_fractional,
    hundredths_exact,
    on_market_ladder,
    parse_odds,
    same_price,
)

FRACTIONAL = Ladder(kind="fractional", display="fractional")


def create(ledger: Ledger, market_id: str, ladder: Ladder, *odds: Odds) -> CreateMarket:
    return CreateMarket(
        request_id=ledger.request_id(),
        market_id=market_id,
        event_id="e",
        name=market_id,
        selections=tuple(SelectionSpec(f"s{i}", f"S{i}", o) for i, o in enumerate(odds)),
        ladder=ladder,
    )


def quote(ledger: Ledger, market_id: str, odds: Odds) -> UpdatePrices:
    return UpdatePrices(
        request_id=ledger.request_id(),
        market_id=market_id,
        prices=(SelectionPrice("s0", odds),),
    )


def test_the_fractional_ladder_is_the_bookmakers_ladder_shortest_first() -> None:
    prices = [parse_odds(text) for text in FRACTIONAL_LADDER]
    values = [p.numerator / p.denominator for p in prices]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert FRACTIONAL_LADDER[0] == "1/5" and FRACTIONAL_LADDER[-1] == "1000/1"
    for text in ("evs", "100/30", "6/4", "4/6", "13/8", "11/4", "9/2", "33/1", "100/1"):
        assert text in FRACTIONAL_LADDER
        assert format_fractional(parse_odds(text)) == text


def test_a_trader_quotes_10_3_and_100_30_on_a_fractional_market_but_not_off_ladder() -> None:
    ledger = Ledger()
    ledger.ok(create(ledger, "race", FRACTIONAL, parse_odds("100/30"), parse_odds("evs")))
    ledger.ok(quote(ledger, "race", parse_odds("10/3")))
    ledger.ok(quote(ledger, "race", parse_odds("100/30")))
    price = ledger.state.markets["race"].selections["s0"].odds
    assert same_price(price, parse_odds("10/3")) and price.style == "fractional"
    for off in ("4.33", "7/3", "1/6", "1001/1"):
        odds = Price(1001, 1, "fractional") if off == "1001/1" else parse_odds(off)
        code = ledger.refused(quote(ledger, "race", odds))
        assert code in ("off_ladder", "invalid_odds"), off
    assert ledger.refused(quote(ledger, "race", parse_odds("4.33"))) == "off_ladder"
    # A price on the ladder quoted in another notation is the same exact price.
    ledger.ok(quote(ledger, "race", parse_odds("2.5")))
    assert same_price(ledger.state.markets["race"].selections["s0"].odds, parse_odds("6/4"))
    assert ledger.refused(create(ledger, "bad", FRACTIONAL, parse_odds("4.33"))) == "off_ladder"


def test_the_exchange_ladder_still_works_for_markets_that_declare_it() -> None:
    ledger = Ledger()
    ledger.ok(create(ledger, "ex", Ladder(), 430))
    ledger.ok(quote(ledger, "ex", parse_odds("4.4")))
    assert ledger.refused(quote(ledger, "ex", parse_odds("10/3"))) == "off_ladder"
    assert ledger.refused(quote(ledger, "ex", 201)) == "off_ladder"
    ledger.ok(quote(ledger, "ex", parse_odds("6/4")))  # 2.50 is on the exchange ladder


def test_a_free_decimal_ladder_takes_any_price_on_its_tick() -> None:
    ledger = Ledger()
    ladder = Ladder(kind="decimal", tick_hundredths=5)
    ledger.ok(create(ledger, "dec", ladder, 205))
    ledger.ok(quote(ledger, "dec", parse_odds("7.35")))
    assert ledger.refused(quote(ledger, "dec", parse_odds("7.36"))) == "off_ladder"
    assert ledger.refused(quote(ledger, "dec", parse_odds("10/3"))) == "off_ladder"
    bad_tick = Ladder(kind="decimal", tick_hundredths=0)
    assert ledger.refused(create(ledger, "bad", bad_tick, 205)) == "invalid_market"


@pytest.mark.parametrize("text", FRACTIONAL_LADDER)
def test_every_fractional_ladder_price_is_on_the_ladder_and_exact(text: str) -> None:
    price = parse_odds(text)
    assert on_market_ladder(price, FRACTIONAL)
    exact = hundredths_exact(price)
    assert exact is None or on_market_ladder(price, Ladder(kind="decimal"))


def test_feeds_skip_off_ladder_items_and_keep_going() -> None:
    ledger = Ledger()
    ledger.ok(create(ledger, "race", FRACTIONAL, parse_odds("5/2")))
    reply = ledger.ok(
        FeedBatch(
            request_id=ledger.request_id(),
            producer="feedco",
            to_cursor=3,
            markets=(
                FeedMarket("race", 1, prices=(SelectionPrice("s0", parse_odds("4.33")),)),
                FeedMarket("race", 2, prices=(SelectionPrice("s0", parse_odds("100/30")),)),
                FeedMarket("race", 3, prices=(SelectionPrice("s0", 201),)),
            ),
        )
    )
    assert isinstance(reply, FeedReply)
    assert (reply.applied, reply.skipped) == (1, 2)
    assert same_price(ledger.state.markets["race"].selections["s0"].odds, parse_odds("10/3"))


def test_a_price_not_in_lowest_terms_is_invalid_everywhere() -> None:
    ledger = Ledger()
    ledger.ok(create(ledger, "race", FRACTIONAL, parse_odds("5/2")))
    assert ledger.refused(quote(ledger, "race", Price(20, 6, "fractional"))) == "invalid_odds"
    assert ledger.refused(create(ledger, "bad", Ladder(), Price(30, 20))) == "invalid_odds"
