"""Feed batches (exactly once per partition, lenient per item) and producer
down/up."""

from __future__ import annotations

from ledger_driver import Ledger

from ironbook.core import (
    Accepted,
    CreateMarket,
    FeedBatch,
    FeedCursorReply,
    FeedMarket,
    FeedReply,
    GetFeedCursor,
    GetMarket,
    ProducerReply,
    SelectionPrice,
    SelectionSpec,
    SetProducerStatus,
    SettleMarket,
    Winner,
    acting,
    check_invariants,
    decide,
    issued,
)
from ironbook.core.events import FeedApplied
from ironbook.core.odds import Price
from ironbook.core.odds import from_hundredths as h
from ironbook.core.queries import ListMarkets
from ironbook.core.views import MarketPage, MarketView

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


PRODUCER = "lsports"


def specs(**odds: int) -> tuple[SelectionSpec, ...]:
    return tuple(SelectionSpec(selection_id=s, name=s.upper(), odds=o) for s, o in odds.items())


def prices(**odds: int) -> tuple[SelectionPrice, ...]:
    return tuple(SelectionPrice(selection_id=s, odds=o) for s, o in odds.items())


def feed(ledger: Ledger, to_cursor: int, *items: FeedMarket, producer: str = PRODUCER) -> FeedReply:
    reply = ledger.ok(
        FeedBatch(
            request_id=ledger.request_id(), producer=producer, to_cursor=to_cursor, markets=items
        )
    )
    assert isinstance(reply, FeedReply)
    return reply


def new_market(market_id: str, seq: int, **odds: int) -> FeedMarket:
    return FeedMarket(
        market_id=market_id,
        seq=seq,
        event_id=f"ev-{market_id}",
        name=market_id,
        selections=specs(**odds),
    )


def odds_of(ledger: Ledger, market_id: str, selection_id: str) -> Price:
    return ledger.state.markets[market_id].selections[selection_id].odds


def live_ledger() -> Ledger:
    ledger = Ledger()
    ledger.open_account("alice", 10_000)
    feed(ledger, 10, new_market("m1", 10, a=200, b=300))
    return ledger


def test_a_feed_batch_creates_markets_and_moves_prices() -> None:
    ledger = Ledger()
    reply = feed(
        ledger,
        5,
        new_market("m1", 3, a=200, b=300),
        FeedMarket(market_id="m1", seq=5, prices=prices(a=210)),
    )
    assert reply == FeedReply(producer=PRODUCER, cursor=5, applied=2, skipped=0)
    market = ledger.state.markets["m1"]
    assert market.producer == PRODUCER
    assert market.status == "open"
    assert odds_of(ledger, "m1", "a") == h(210)
    assert ledger.state.feed_cursors == {PRODUCER: 5}
    [event] = ledger.log
    assert isinstance(event, FeedApplied)
    assert event.reply is None
    # Thousands of these a second: they never grow the idempotency log.
    assert ledger.state.replies == {}


def test_a_replayed_batch_has_no_effect() -> None:
    ledger = live_ledger()
    batch = FeedBatch(
        request_id="f-2",
        producer=PRODUCER,
        to_cursor=12,
        markets=(FeedMarket(market_id="m1", seq=12, prices=prices(a=220)),),
    )
    assert ledger.ok(batch) == FeedReply(producer=PRODUCER, cursor=12, applied=1, skipped=0)
    log_length = len(ledger.log)
    ledger.ok(
        FeedBatch(
            request_id="f-3",
            producer=PRODUCER,
            to_cursor=13,
            markets=(FeedMarket(market_id="m1", seq=13, prices=prices(a=230)),),
        )
    )
    for request_id in ("f-2", "f-2-again"):
        again = FeedBatch(
            request_id=request_id,
            producer=PRODUCER,
            to_cursor=12,
            markets=batch.markets,
        )
        outcome = decide(ledger.state, issued(again, PEOPLE), ledger.now_ms)
        assert outcome == Accepted(
            events=(), result=FeedReply(producer=PRODUCER, cursor=13, applied=0, skipped=0)
        )
    assert len(ledger.log) == log_length + 1
    assert odds_of(ledger, "m1", "a") == h(230)


def test_an_overlapping_batch_applies_only_the_newer_items() -> None:
    ledger = live_ledger()
    feed(ledger, 20, FeedMarket(market_id="m1", seq=20, prices=prices(a=250)))
    reply = feed(
        ledger,
        30,
        FeedMarket(market_id="m1", seq=18, prices=prices(a=190)),  # already covered
        FeedMarket(market_id="m1", seq=25, prices=prices(b=350)),
    )
    assert reply == FeedReply(producer=PRODUCER, cursor=30, applied=1, skipped=0)
    assert odds_of(ledger, "m1", "a") == h(250)
    assert odds_of(ledger, "m1", "b") == h(350)
    event = ledger.log[-1]
    assert isinstance(event, FeedApplied)
    assert [item.seq for item in event.markets] == [25]


def test_cursors_are_per_producer() -> None:
    ledger = live_ledger()
    feed(ledger, 3, new_market("r1", 3, x=400), producer="betradar")
    assert ledger.state.feed_cursors == {PRODUCER: 10, "betradar": 3}
    assert ledger.state.markets["r1"].producer == "betradar"


def test_invalid_items_are_skipped_and_counted_never_stalling_the_feed() -> None:
    ledger = live_ledger()
    ledger.ok(
        CreateMarket(
            request_id="other",
            market_id="theirs",
            event_id="e",
            name="n",
            selections=specs(z=200),
            producer="betradar",
        )
    )
    reply = feed(
        ledger,
        20,
        FeedMarket(market_id="ghost", seq=11, prices=prices(a=200)),  # unknown, no selections
        FeedMarket(market_id="m1", seq=12, prices=prices(a=201)),  # off the ladder
        FeedMarket(market_id="m1", seq=13, prices=prices(zed=200)),  # unknown selection
        FeedMarket(market_id="m1", seq=14, prices=prices(a=210, **{"a2": 220})),
        FeedMarket(market_id="m1", seq=15, bet_delay_s=10_000),  # delay out of range
        FeedMarket(market_id="theirs", seq=16, prices=prices(z=210)),  # another producer's
        FeedMarket(market_id="bad id", seq=17, event_id="e", selections=specs(a=200)),
        FeedMarket(market_id="m1", seq=18, prices=prices(b=320)),  # the one good item
    )
    assert reply == FeedReply(producer=PRODUCER, cursor=20, applied=1, skipped=7)
    assert odds_of(ledger, "m1", "a") == h(200)
    assert odds_of(ledger, "m1", "b") == h(320)
    assert "ghost" not in ledger.state.markets
    assert odds_of(ledger, "theirs", "z") == h(200)
    assert ledger.state.feed_cursors[PRODUCER] == 20


def test_feed_status_moves_and_settled_markets_are_out_of_reach() -> None:
    ledger = live_ledger()
    feed(ledger, 11, FeedMarket(market_id="m1", seq=11, status="suspended"))
    assert ledger.state.markets["m1"].status == "suspended"
    feed(ledger, 12, FeedMarket(market_id="m1", seq=12, status="open"))
    feed(ledger, 13, FeedMarket(market_id="m1", seq=13, status="closed"))
    # A provider may reopen a closed market.
    feed(ledger, 14, FeedMarket(market_id="m1", seq=14, status="suspended"))
    feed(ledger, 15, FeedMarket(market_id="m1", seq=15, status="closed"))
    ledger.ok(SettleMarket(request_id="s", market_id="m1", winners=(Winner("a"),)))
    reply = feed(
        ledger,
        16,
        FeedMarket(market_id="m1", seq=16, status="open"),
        FeedMarket(market_id="m1", seq=16, prices=prices(a=500)),
    )
    assert reply.skipped == 2
    assert ledger.state.markets["m1"].status == "settled"
    assert odds_of(ledger, "m1", "a") == h(200)


def test_items_see_the_earlier_items_of_their_batch() -> None:
    ledger = Ledger()
    reply = feed(
        ledger,
        4,
        new_market("m1", 1, a=200),
        FeedMarket(market_id="m1", seq=2, status="closed", in_play=True, bet_delay_s=5),
        FeedMarket(market_id="m1", seq=3, status="open", prices=prices(a=220)),
        FeedMarket(market_id="m1", seq=4, prices=prices(zed=220)),
    )
    assert reply == FeedReply(producer=PRODUCER, cursor=4, applied=3, skipped=1)
    market = ledger.state.markets["m1"]
    assert (market.status, market.in_play, market.bet_delay_s) == ("open", True, 5)
    assert odds_of(ledger, "m1", "a") == h(220)


def test_get_feed_cursor() -> None:
    ledger = live_ledger()
    query = GetFeedCursor(request_id="q", producer=PRODUCER)
    assert ledger.ok(query) == FeedCursorReply(producer=PRODUCER, cursor=10, down=False)
    ledger.ok(SetProducerStatus(request_id="d", producer=PRODUCER, down=True))
    assert ledger.ok(GetFeedCursor(request_id="q2", producer=PRODUCER)) == FeedCursorReply(
        producer=PRODUCER, cursor=10, down=True
    )
    assert ledger.ok(GetFeedCursor(request_id="q3", producer="nobody")) == FeedCursorReply(
        producer="nobody", cursor=0, down=False
    )


def test_a_down_producer_suspends_its_markets_and_resumes() -> None:
    ledger = live_ledger()
    ledger.create_market("manual", {"x": 200})
    assert ledger.ok(SetProducerStatus(request_id="d", producer=PRODUCER, down=True)) == (
        ProducerReply(producer=PRODUCER, down=True)
    )
    assert ledger.state.producers_down == {PRODUCER: ledger.now_ms}
    outcome = ledger.submit(ledger.bet_command("alice", 100, ("m1", "a", 200)))
    assert getattr(outcome, "code", None) == "market_suspended"
    assert PRODUCER in getattr(outcome, "message", "")
    # A market traded by hand is unaffected.
    ledger.bet("alice", 100, ("manual", "x", 200))
    view = ledger.ok(GetMarket(request_id="g", market_id="m1"))
    assert isinstance(view, MarketView)
    assert (view.status, view.producer, view.producer_down) == ("suspended", PRODUCER, True)
    # The state keeps the market open: nothing was written per market.
    assert ledger.state.markets["m1"].status == "open"
    page = ledger.ok(ListMarkets(request_id="l", status="suspended"))
    assert isinstance(page, MarketPage)
    assert [m.market_id for m in page.markets] == ["m1"]

    ledger.ok(SetProducerStatus(request_id="u", producer=PRODUCER, down=False))
    assert ledger.state.producers_down == {}
    ledger.bet("alice", 100, ("m1", "a", 200))
    view = ledger.ok(GetMarket(request_id="g2", market_id="m1"))
    assert isinstance(view, MarketView)
    assert (view.status, view.producer_down) == ("open", False)
    assert check_invariants(ledger.state) == []


def test_down_twice_keeps_the_first_time() -> None:
    ledger = live_ledger()
    ledger.ok(SetProducerStatus(request_id="d1", producer=PRODUCER, down=True))
    since = ledger.state.producers_down[PRODUCER]
    ledger.advance(5_000)
    ledger.ok(SetProducerStatus(request_id="d2", producer=PRODUCER, down=True))
    assert ledger.state.producers_down[PRODUCER] == since


def test_create_market_with_a_producer() -> None:
    ledger = Ledger()
    ledger.ok(
        CreateMarket(
            request_id="c",
            market_id="m",
            event_id="e",
            name="n",
            selections=specs(a=200),
            producer=PRODUCER,
        )
    )
    assert ledger.state.markets["m"].producer == PRODUCER
