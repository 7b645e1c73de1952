"""The ingester's round logic with fakes around it: bounded rounds, one
batch to every partition, odds published after the acks, and the producer
down/up rule (down after silence; up only once caught up *and* alive again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ironbook import core
from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    MarketSelection,
    NewMarket,
    OddsChange,
    Price,
)
from ironbook.core.events import FeedReply, ProducerReply
from ironbook.core.views import FeedCursorReply, ReadRefusal
from ironbook.services.feed.ingest import MAX_ROUND_MARKETS, Ingester
from ironbook.services.feed.pacing import BUSY_INTERVAL_MS


class FakeProvider:
    producer = "sim"

    def __init__(self) -> None:
        self.tail = 0

    async def tail_cursor(self) -> int:
        return self.tail

    async def iterate(self, after_cursor: int) -> AsyncIterator[AnyFeedMessage]:
        raise AssertionError("the tests fill the queue themselves")
        yield  # pragma: no cover


class FakeClient:
    partitions = 2

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any]] = []
        self.cursors = [0, 0]

    async def submit_to(self, partition: int, command: Any) -> core.Outcome:
        self.sent.append((partition, command))
        if isinstance(command, core.GetFeedCursor):
            reply: Any = FeedCursorReply(command.producer, self.cursors[partition], False)
        elif isinstance(command, core.FeedBatch):
            self.cursors[partition] = max(self.cursors[partition], command.to_cursor)
            reply = FeedReply(command.producer, self.cursors[partition], len(command.markets), 0)
        elif isinstance(command, core.SetProducerStatus):
            reply = ProducerReply(command.producer, command.down)
        else:
            reply = ReadRefusal("unknown_market", "no such market")
        return core.Accepted(events=(), result=reply)

    def commands(self, kind: type) -> list[tuple[int, Any]]:
        return [(p, c) for p, c in self.sent if isinstance(c, kind)]


class FakeNats:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.published.append((subject, payload))


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _ingester(
    clock: Clock, pauses: list[float] | None = None
) -> tuple[Ingester, FakeProvider, FakeClient, FakeNats]:
    provider, client, nc = FakeProvider(), FakeClient(), FakeNats()
    recorded = [] if pauses is None else pauses

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)
        clock.now_s += seconds

    ingester = Ingester(
        provider,
        client,  # type: ignore[arg-type]
        nc,  # type: ignore[arg-type]
        down_after_ms=3_000,
        clock=clock,
        sleep=sleep,
    )
    return ingester, provider, client, nc


def _created(cursor: int, market: str) -> NewMarket:
    return NewMarket(
        producer="sim",
        cursor=cursor,
        ts_ms=cursor,
        event_id="e1",
        event_name="A v B",
        sport="football",
        market_id=market,
        market_name="Match",
        selections=(MarketSelection("a", "A", 200), MarketSelection("b", "B", 300)),
    )


def _alive(cursor: int) -> Alive:
    return Alive(producer="sim", cursor=cursor, ts_ms=cursor)


def test_a_round_is_bounded_and_goes_to_every_partition(clock: Clock) -> None:
    async def scenario() -> None:
        ingester, _, client, nc = _ingester(clock)
        for cursor in range(1, 6_001):
            ingester._queue.put_nowait(_created(cursor, f"m{cursor}"))
        conflation = await ingester._take()
        assert conflation.items <= MAX_ROUND_MARKETS
        assert not ingester._queue.empty()

        ingester, _, client, nc = _ingester(clock)
        ingester._queue.put_nowait(_created(1, "m1"))
        ingester._queue.put_nowait(
            OddsChange(
                producer="sim",
                cursor=2,
                ts_ms=2,
                event_id="e1",
                market_id="m1",
                prices=(Price("a", 210),),
            )
        )
        await ingester.round()
        batches = client.commands(core.FeedBatch)
        assert sorted(p for p, _ in batches) == [0, 1]
        assert all(batch.to_cursor == 2 and len(batch.markets) == 1 for _, batch in batches)
        assert ingester.cursor == 2
        [(subject, payload)] = nc.published
        assert subject == "odds.e1.m1" and b'"a":"2.10"' in payload

    asyncio.run(scenario())


def test_producer_down_after_silence_up_only_when_caught_up_and_alive(clock: Clock) -> None:
    async def scenario() -> None:
        ingester, provider, client, _ = _ingester(clock)
        ingester._last_alive = clock.now_s
        ingester._queue.put_nowait(_alive(1))
        await ingester.round()
        clock.now_s += 2.9
        await ingester.round()
        assert not client.commands(core.SetProducerStatus)

        clock.now_s += 0.2
        await ingester.round()
        downs = client.commands(core.SetProducerStatus)
        assert sorted(p for p, _ in downs) == [0, 1] and all(c.down for _, c in downs)
        assert ingester.down

        # A backlog with old heartbeats in it: applied, but not "up" yet.
        provider.tail = 20
        for cursor in range(2, 11):
            ingester._queue.put_nowait(_alive(cursor) if cursor == 5 else _created(cursor, "m1"))
        await ingester.round()
        assert ingester.cursor == 10 and ingester.down
        for cursor in range(11, 21):
            ingester._queue.put_nowait(_created(cursor, "m1"))
        await ingester.round()
        assert ingester.cursor == 20 and ingester.down
        await ingester.round()  # idle: finds it has caught up with the tail
        assert ingester.down
        ingester._queue.put_nowait(_alive(21))
        await ingester.round()
        ups = [c for _, c in client.commands(core.SetProducerStatus) if not c.down]
        assert len(ups) == 2 and not ingester.down
        assert client.cursors == [21, 21]
        # What the metrics report: every message read, the rounds applied, the
        # cursor, and the silence measured on the ingester's clock.
        counts = ingester.counts
        assert counts.messages_in == 21 and counts.read_cursor == 21
        assert counts.applied_cursor == 21 and counts.rounds >= 3 and not counts.down
        assert counts.silent_s is not None and counts.silent_s() == 0.0
        clock.now_s += 12.5
        assert counts.silent_s() == 12.5

    asyncio.run(scenario())


def test_rounds_are_paced_only_while_the_feed_is_busy(clock: Clock) -> None:
    """A busy feed (more than BUSY_ABOVE_MESSAGES_PER_S) gets at most one
    round per BUSY_INTERVAL_MS, so more changes conflate into each; a quiet
    one goes round after round."""

    async def scenario() -> None:
        pauses: list[float] = []
        ingester, _, client, _ = _ingester(clock, pauses)
        ingester._last_alive = clock.now_s
        cursor = 0

        async def round_with(messages: int, after_s: float) -> None:
            nonlocal cursor
            clock.now_s += after_s
            for _ in range(messages):
                cursor += 1
                ingester._queue.put_nowait(_created(cursor, f"m{cursor}"))
            await ingester.round()

        await round_with(1, 0)
        assert pauses == []  # the first round has nothing to compare with
        # Quiet: one message every 20 ms (50/s) is never paced.
        for _ in range(5):
            await round_with(1, 0.020)
        assert pauses == []
        # Busy: 20 messages 20 ms after the previous round (1,000/s).
        clock.now_s += 0.002  # the round itself took 2 ms
        await round_with(20, 0.018)
        assert pauses == [pytest.approx(BUSY_INTERVAL_MS / 1000)]
        # Still busy at the paced rhythm: 50 messages in 50 ms.
        await round_with(50, 0)
        assert len(pauses) == 2
        # The feed quietens: 5 messages in 50 ms (100/s) is not paced.
        await round_with(5, 0)
        assert len(pauses) == 2
        assert ingester.cursor == cursor
        assert client.cursors == [cursor, cursor]

    asyncio.run(scenario())
