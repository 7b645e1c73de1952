"""The simulated provider's durable side on a real JetStream (3 nodes, R1 streams): a
restart resumes the same world exactly; a world that cannot be replayed is
closed out through the feed and replaced."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from ironbook.adapters.feed.messages import (
    AnyFeedMessage,
    BetCancel,
    BetSettlement,
    NewMarket,
    OddsChange,
    RollbackBetSettlement,
)
from ironbook.adapters.feed.nats_stream import NatsFeedStream
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.services.feed.provider import (
    REPLACED_REASON,
    open_worlds,
    resume_simulator,
    save_checkpoint,
)

pytestmark = pytest.mark.slow

WORLD = SimulatorConfig(
    producer="p1", seed=1, odds_changes_per_s=500, pre_match_s=5, race_in_play_s=5
)


def _no_time(message: AnyFeedMessage) -> AnyFeedMessage:
    return msgspec.structs.replace(message, ts_ms=0)


async def _all(stream: NatsFeedStream) -> list[AnyFeedMessage]:
    tail = await stream.tail_cursor()
    messages: list[AnyFeedMessage] = []
    cursor = 0
    while cursor < tail:
        chunk, cursor = await stream.read(cursor, max_messages=5_000, wait_ms=1_000)
        messages.extend(chunk)
    return messages


def test_restart_resumes_the_world_and_a_new_seed_replaces_it(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ironbook.feed.provider")

    async def scenario() -> None:
        nc = await connect_nats(nats_url)
        try:
            stream = await NatsFeedStream.open(nc, "p1", replicas=1)
            worlds = await open_worlds(nc, replicas=1)

            first = await resume_simulator(stream, worlds, WORLD)
            assert first.cursor == 0
            await stream.publish([first.next() for _ in range(3_000)])

            resumed = await resume_simulator(stream, worlds, WORLD)
            assert resumed.cursor == 3_000
            after = [resumed.next() for _ in range(500)]
            reference = Simulator(WORLD, epoch_ms=0)
            for _ in range(3_000):
                reference.next()
            assert [_no_time(m) for m in after] == [_no_time(reference.next()) for _ in range(500)]
            await stream.publish(after)

            # A checkpoint at 3,500, then 200 more: a restart replays only those.
            await save_checkpoint(worlds, resumed)
            await stream.publish([resumed.next() for _ in range(200)])
            for _ in range(200):
                reference.next()
            from_checkpoint = await resume_simulator(stream, worlds, WORLD)
            assert from_checkpoint.cursor == 3_700
            assert "replayed from cursor 3500 (checkpoint)" in caplog.text
            assert [_no_time(from_checkpoint.next()) for _ in range(300)] == [
                _no_time(reference.next()) for _ in range(300)
            ]

            replaced = await resume_simulator(
                stream, worlds, SimulatorConfig(producer="p1", seed=2, odds_changes_per_s=500)
            )
            tail = await stream.tail_cursor()
            assert replaced.cursor == tail > 3_700
            closing = (await _all(stream))[3_700:]
            cancels = [m for m in closing if isinstance(m, BetCancel)]
            assert cancels and all(m.reason == REPLACED_REASON for m in cancels)
            assert all(
                isinstance(m, OddsChange) and m.status == "closed"
                for m in closing
                if not isinstance(m, BetCancel)
            )
            finished: dict[str, bool] = {}
            for message in await _all(stream):
                if isinstance(message, NewMarket):
                    finished[message.market_id] = False
                elif isinstance(message, BetSettlement) or (
                    isinstance(message, BetCancel) and message.start_ms is None
                ):
                    finished[message.market_id] = True
                elif isinstance(message, RollbackBetSettlement):
                    finished[message.market_id] = False
            assert finished and all(finished.values())
            new_world = replaced.next()
            assert new_world.cursor == tail + 1
            await stream.publish([new_world])
            created = next(
                m for m in (replaced.next() for _ in range(50)) if isinstance(m, NewMarket)
            )
            assert created.market_id.startswith(f"p12w{tail + 1}-")

            again = await resume_simulator(
                stream, worlds, SimulatorConfig(producer="p1", seed=2, odds_changes_per_s=500)
            )
            assert again.cursor == tail + 1
        finally:
            await close_nats(nc)

    asyncio.run(scenario())
