"""Conflation into `FeedBatch`es: however the feed is cut into rounds, and
from whichever earlier cursor a restarted ingester replays it, every
partition ends with the state of a message-by-message fold."""

from __future__ import annotations

import json
import random

from feed_support import Partition

from ironbook import core
from ironbook.adapters.feed.messages import AnyFeedMessage, NewMarket, OddsChange
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig
from ironbook.core.odds import Ladder, parse_odds
from ironbook.services.feed.conflate import Conflation
from ironbook.services.feed.ingest import OddsBook

CONFIG = SimulatorConfig(
    seed=3, odds_changes_per_s=100, pre_match_s=10, football_in_play_s=20, race_in_play_s=8
)


def _messages(count: int) -> list[AnyFeedMessage]:
    simulator = Simulator(CONFIG, epoch_ms=0)
    return [simulator.next() for _ in range(count)]


def _cut(messages: list[AnyFeedMessage], rng: random.Random) -> list[list[AnyFeedMessage]]:
    rounds, index = [], 0
    while index < len(messages):
        size = rng.choice((1, 2, 7, 50, 400, 2_000))
        rounds.append(messages[index : index + size])
        index += size
    return rounds


def test_any_rounds_give_the_message_by_message_fold() -> None:
    messages = _messages(6_000)
    one_by_one = Partition()
    for message in messages:
        one_by_one.feed([message])
    expected = one_by_one.markets()
    assert len(expected) > 5
    assert {status for status, *_ in expected.values()} >= {"open", "closed"}
    for seed in range(3):
        conflated = Partition()
        for chunk in _cut(messages, random.Random(seed)):
            conflated.feed(chunk)
        assert conflated.markets() == expected
        assert conflated.cursor == messages[-1].cursor


def test_replay_from_an_earlier_cursor_changes_nothing_twice() -> None:
    """Two partitions at different cursors (a crash between their acks): the
    ingester resumes from the smaller one and both end equal to the fold."""
    messages = _messages(6_000)
    ahead, behind = Partition(), Partition()
    for chunk in _cut(messages[:4_000], random.Random(1)):
        ahead.feed(chunk)
    for chunk in _cut(messages[:2_500], random.Random(2)):
        behind.feed(chunk)
    resume_from = min(ahead.cursor, behind.cursor)
    assert resume_from == 2_500
    stale = ahead.feed(messages[1_000:3_000])
    assert stale.applied == 0 and stale.cursor == 4_000
    for chunk in _cut(messages[resume_from:], random.Random(3)):
        ahead.feed(chunk)
        behind.feed(chunk)
    fold = Partition()
    fold.feed(messages)
    assert ahead.markets() == behind.markets() == fold.markets()


def test_conflation_keeps_newest_price_status_and_cursor() -> None:
    messages = _messages(3_000)
    conflation = Conflation()
    for message in messages:
        conflation.add(message)
    assert conflation.from_cursor == 1 and conflation.through_cursor == 3_000
    assert conflation.items < conflation.messages
    newest: dict[tuple[str, str], int] = {}
    last_seq: dict[str, int] = {}
    for message in messages:
        if isinstance(message, NewMarket):
            for selection in message.selections:
                newest[(message.market_id, selection.selection_id)] = selection.odds
        if isinstance(message, OddsChange):
            for price in message.prices:
                newest[(message.market_id, price.selection_id)] = price.odds
        if isinstance(message, NewMarket | OddsChange):
            last_seq[message.market_id] = message.cursor
    batch = conflation.batch("sim")
    assert batch.request_id == "feed:sim:1-3000" and batch.to_cursor == 3_000
    for item in batch.markets:
        assert item.seq >= last_seq.get(item.market_id, 0)
        prices = {p.selection_id: p.odds for p in item.prices}
        specs = {s.selection_id: s.odds for s in item.selections}
        for selection_id, odds in {**specs, **prices}.items():
            assert newest[(item.market_id, selection_id)] == odds


def test_odds_message_shape() -> None:
    messages = _messages(200)
    conflation = Conflation()
    for message in messages:
        conflation.add(message)
    book = OddsBook()
    assert book.apply(conflation) == []
    change = next(iter(conflation.changes.values()))
    decoded = json.loads(book.message(change.market_id, cursor=change.seq, feed_ts_ms=123))
    assert set(decoded) == {
        "event_id",
        "market_id",
        "status",
        "in_play",
        "display",
        "prices",
        "cursor",
        "feed_ts_ms",
        "published_ms",
    }
    assert decoded["market_id"] == change.market_id and decoded["feed_ts_ms"] == 123
    assert all(isinstance(v, str) and "." in v for v in decoded["prices"].values())


def test_the_size_estimate_bounds_the_encoded_batch() -> None:
    messages = _messages(20_000)
    rng = random.Random(5)
    for chunk in _cut(messages, rng):
        conflation = Conflation()
        for message in chunk:
            conflation.add(message)
        encoded = len(core.encode_command(conflation.batch("sim")))
        assert encoded <= conflation.approx_bytes + 100


def test_odds_messages_show_prices_in_the_markets_notation() -> None:
    book = OddsBook()
    book.learn(
        core.MarketView(
            market_id="race",
            event_id="e",
            name="2:30",
            status="open",
            in_play=False,
            bet_delay_s=0,
            selections=(core.views.SelectionView("a", "A", parse_odds("100/30")),),
            winners=(),
            ladder=Ladder(kind="fractional", display="fractional"),
        )
    )
    decoded = json.loads(book.message("race", cursor=1, feed_ts_ms=1))
    assert (decoded["display"], decoded["prices"]) == ("fractional", {"a": "100/30"})
