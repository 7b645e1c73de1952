"""Markets: creation, prices, and the status machine."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    CloseMarket,
    CreateMarket,
    LedgerConfig,
    ResettleMarket,
    ResumeMarket,
    SelectionPrice,
    SelectionSpec,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
)
from ironbook.core.events import MarketCreated, MarketStatusChanged, PricesUpdated
from ironbook.core.odds import from_hundredths as h


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def spec(selection_id: str, odds: int = 200) -> SelectionSpec:
    return SelectionSpec(selection_id=selection_id, name=selection_id.upper(), odds=odds)


def create(
    ledger: Ledger,
    market_id: str = "m1",
    selections: tuple[SelectionSpec, ...] = (spec("a"), spec("b")),
    event_id: str = "e1",
    bet_delay_s: int = 0,
) -> CreateMarket:
    return CreateMarket(
        request_id=ledger.request_id(),
        market_id=market_id,
        event_id=event_id,
        name="Race 1",
        selections=selections,
        bet_delay_s=bet_delay_s,
    )


def prices(ledger: Ledger, *pairs: tuple[str, int], market_id: str = "m1") -> UpdatePrices:
    return UpdatePrices(
        request_id=ledger.request_id(),
        market_id=market_id,
        prices=tuple(SelectionPrice(selection_id=s, odds=o) for s, o in pairs),
    )


def suspend(ledger: Ledger, market_id: str = "m1") -> SuspendMarket:
    return SuspendMarket(request_id=ledger.request_id(), market_id=market_id)


def resume(ledger: Ledger, market_id: str = "m1") -> ResumeMarket:
    return ResumeMarket(request_id=ledger.request_id(), market_id=market_id)


def close(ledger: Ledger, market_id: str = "m1") -> CloseMarket:
    return CloseMarket(request_id=ledger.request_id(), market_id=market_id)


def settle(ledger: Ledger, market_id: str = "m1") -> SettleMarket:
    return SettleMarket(
        request_id=ledger.request_id(), market_id=market_id, winners=(Winner(selection_id="a"),)
    )


def void(ledger: Ledger, market_id: str = "m1") -> VoidMarket:
    return VoidMarket(
        request_id=ledger.request_id(), market_id=market_id, actor="ops", reason="abandoned"
    )


def resettle(ledger: Ledger, market_id: str = "m1") -> ResettleMarket:
    return ResettleMarket(
        request_id=ledger.request_id(),
        market_id=market_id,
        winners=(Winner(selection_id="b"),),
        actor="ops",
        reason="stewards",
    )


def status(ledger: Ledger, market_id: str = "m1") -> str:
    return ledger.state.markets[market_id].status


def test_create_market(ledger: Ledger) -> None:
    reply = ledger.ok(create(ledger, selections=(spec("a", 250), spec("b", 1_000))))
    assert reply.market_id == "m1"
    assert reply.status == "open"
    market = ledger.state.markets["m1"]
    assert market.status == "open"
    assert market.event_id == "e1"
    assert {s.selection_id: s.odds for s in market.selections.values()} == {
        "a": h(250),
        "b": h(1_000),
    }
    assert all(s.liability_minor == 0 for s in market.selections.values())
    assert isinstance(ledger.log[-1], MarketCreated)
    assert ledger.log[-1].postings == ()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"market_id": ""}, "invalid_market"),
        ({"market_id": "has space"}, "invalid_market"),
        ({"event_id": ""}, "invalid_market"),
        ({"event_id": "x" * 65}, "invalid_market"),
        ({"selections": ()}, "invalid_market"),
        ({"selections": (spec("a"), spec("a"))}, "invalid_market"),
        ({"selections": (spec(""),)}, "invalid_market"),
        ({"selections": (spec("a"), spec("b b"))}, "invalid_market"),
        ({"bet_delay_s": -1}, "invalid_market"),
        ({"bet_delay_s": 301}, "invalid_market"),
        ({"selections": (spec("a", 201),)}, "off_ladder"),
        ({"selections": (spec("a", 100),)}, "invalid_odds"),
        ({"selections": (spec("a", 100_101),)}, "invalid_odds"),
    ],
)
def test_create_market_validation(ledger: Ledger, kwargs: dict, code: str) -> None:
    assert ledger.refused(create(ledger, **kwargs)) == code
    assert ledger.state.markets == {}


def test_too_many_selections() -> None:
    ledger = Ledger(LedgerConfig(max_selections=3))
    four = tuple(spec(f"s{i}") for i in range(4))
    assert ledger.refused(create(ledger, selections=four)) == "invalid_market"
    ledger.ok(create(ledger, selections=four[:3]))


def test_duplicate_market_is_refused(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    assert ledger.refused(create(ledger, selections=(spec("z"),))) == "market_exists"
    assert set(ledger.state.markets["m1"].selections) == {"a", "b"}


def test_update_prices(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    reply = ledger.ok(prices(ledger, ("a", 300), ("b", 150)))
    assert reply.status == "open"
    assert isinstance(ledger.log[-1], PricesUpdated)
    selections = ledger.state.markets["m1"].selections
    assert (selections["a"].odds, selections["b"].odds) == (h(300), h(150))
    ledger.ok(prices(ledger, ("b", 160)))
    assert (selections["a"].odds, selections["b"].odds) == (h(300), h(160))


def test_prices_update_while_suspended(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    ledger.ok(suspend(ledger))
    assert ledger.ok(prices(ledger, ("a", 400))).status == "suspended"
    assert ledger.state.markets["m1"].selections["a"].odds == h(400)


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ((("z", 300),), "unknown_selection"),
        ((("a", 300), ("a", 400)), "unknown_selection"),
        ((("a", 301),), "off_ladder"),
        ((("a", 100),), "invalid_odds"),
        ((), "invalid_odds"),
        ((("a", 300), ("b", 300), ("a", 300)), "invalid_odds"),
    ],
)
def test_update_prices_validation(ledger: Ledger, pairs: tuple, code: str) -> None:
    ledger.ok(create(ledger))
    assert ledger.refused(prices(ledger, *pairs)) == code
    assert ledger.state.markets["m1"].selections["a"].odds == h(200)


def test_update_prices_unknown_market(ledger: Ledger) -> None:
    assert ledger.refused(prices(ledger, ("a", 300), market_id="nope")) == "unknown_market"


@pytest.mark.parametrize("final", ["closed", "settled", "voided"])
def test_prices_frozen_once_closed(ledger: Ledger, final: str) -> None:
    ledger.ok(create(ledger))
    if final == "voided":
        ledger.ok(void(ledger))
    else:
        ledger.ok(close(ledger))
    if final == "settled":
        ledger.ok(settle(ledger))
    assert ledger.refused(prices(ledger, ("a", 300))) == "market_closed"


def test_status_machine_happy_path(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    assert ledger.ok(suspend(ledger)).status == "suspended"
    assert isinstance(ledger.log[-1], MarketStatusChanged)
    assert ledger.ok(resume(ledger)).status == "open"
    assert ledger.ok(suspend(ledger)).status == "suspended"
    assert ledger.ok(resume(ledger)).status == "open"
    assert ledger.ok(close(ledger)).status == "closed"
    assert ledger.ok(settle(ledger)).status == "settled"
    assert status(ledger) == "settled"
    assert ledger.ok(resettle(ledger)).status == "settled"
    assert ledger.ok(void(ledger)).status == "voided"
    assert status(ledger) == "voided"


def test_close_from_suspended(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    ledger.ok(suspend(ledger))
    assert ledger.ok(close(ledger)).status == "closed"


@pytest.mark.parametrize("path", [[], ["suspend"], ["close"]])
def test_void_from_any_live_status(ledger: Ledger, path: list[str]) -> None:
    ledger.ok(create(ledger))
    for step in path:
        ledger.ok(suspend(ledger) if step == "suspend" else close(ledger))
    assert ledger.ok(void(ledger)).status == "voided"


# Every refused move leaves the status as it was.
MOVES = {
    "suspend": suspend,
    "resume": resume,
    "close": close,
    "settle": settle,
    "resettle": resettle,
    "void": void,
}
REACH = {
    "open": [],
    "suspended": ["suspend"],
    "closed": ["close"],
    "settled": ["close", "settle"],
    "voided": ["void"],
}
INVALID = [
    ("open", "resume"),
    ("open", "settle"),
    ("open", "resettle"),
    ("suspended", "suspend"),
    ("suspended", "resettle"),
    ("closed", "suspend"),
    ("closed", "resume"),
    ("closed", "close"),
    ("closed", "resettle"),
    ("settled", "suspend"),
    ("settled", "resume"),
    ("settled", "close"),
    ("settled", "settle"),
    ("voided", "suspend"),
    ("voided", "resume"),
    ("voided", "close"),
    ("voided", "settle"),
    ("voided", "void"),
]


@pytest.mark.parametrize(("start", "move"), INVALID)
def test_invalid_status_change(ledger: Ledger, start: str, move: str) -> None:
    ledger.ok(create(ledger))
    for step in REACH[start]:
        ledger.ok(MOVES[step](ledger))
    assert status(ledger) == start
    events_before = len(ledger.log)
    assert ledger.refused(MOVES[move](ledger)) == "invalid_status_change"
    assert status(ledger) == start
    assert len(ledger.log) == events_before + 1


@pytest.mark.parametrize("move", sorted(MOVES))
def test_moves_on_unknown_market(ledger: Ledger, move: str) -> None:
    assert ledger.refused(MOVES[move](ledger, "ghost")) == "unknown_market"


def test_void_and_resettle_need_a_reason(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    blank = VoidMarket(request_id=ledger.request_id(), market_id="m1", actor="ops", reason=" ")
    assert ledger.refused(blank) == "missing_reason"
    ledger.ok(close(ledger))
    ledger.ok(settle(ledger))
    no_reason = ResettleMarket(
        request_id=ledger.request_id(),
        market_id="m1",
        winners=(Winner(selection_id="b"),),
        actor="ops",
        reason="",
    )
    assert ledger.refused(no_reason) == "missing_reason"
    assert ledger.state.markets["m1"].winners == {"a": 1}


@pytest.mark.parametrize(
    "winners",
    [
        (Winner(selection_id="z"),),
        (Winner(selection_id="a"), Winner(selection_id="a")),
        (Winner(selection_id="a", dead_heat=0),),
        (Winner(selection_id="a", dead_heat=3),),  # more than the two runners
    ],
)
def test_invalid_result(ledger: Ledger, winners: tuple[Winner, ...]) -> None:
    ledger.ok(create(ledger))
    ledger.ok(close(ledger))
    command = SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=winners)
    assert ledger.refused(command) == "invalid_result"
    assert status(ledger) == "closed"


def test_no_winner_is_a_valid_result(ledger: Ledger) -> None:
    ledger.ok(create(ledger))
    ledger.ok(close(ledger))
    ledger.ok(SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=()))
    assert status(ledger) == "settled"
    assert ledger.state.markets["m1"].winners == {}
