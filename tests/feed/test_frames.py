"""Frames: one JetStream message per run of feed messages. Packing and strict
decoding (no server), then a real stream (3 NATS nodes, an R1 stream): recovery from any
cursor, retries de-duplicated, a gap refused, bad frames skipped."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import pytest

from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    BetCancel,
    OddsChange,
    Price,
    ResultMessage,
    encode_message,
)
from ironbook.adapters.feed.nats_stream import (
    FeedFrameError,
    FeedPublishRefused,
    NatsFeedStream,
    decode_frame,
    encode_frames,
    frame_subject,
)
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.services.feed.pacing import BUSY_INTERVAL_MS
from ironbook.services.feed.provider import publish_forever

WORLD = SimulatorConfig(
    producer="fr", seed=3, odds_changes_per_s=150, pre_match_s=2, race_in_play_s=3
)


def _messages(count: int) -> list[AnyFeedMessage]:
    simulator = Simulator(WORLD, epoch_ms=1_000_000, first_cursor=1)
    return [simulator.next() for _ in range(count)]


def _odds(cursor: int, producer: str = "fr") -> OddsChange:
    return OddsChange(
        producer=producer,
        cursor=cursor,
        ts_ms=1,
        event_id="e",
        market_id="m",
        prices=(Price(selection_id="s", odds=250),),
    )


def _cancel(cursor: int) -> BetCancel:
    return BetCancel(producer="fr", cursor=cursor, ts_ms=1, event_id="e", market_id="m", reason="x")


def test_frames_are_contiguous_runs_split_at_results_and_bounds() -> None:
    messages = _messages(6_000)
    assert any(isinstance(m, ResultMessage) for m in messages)
    frames = encode_frames(messages, max_messages=50, max_bytes=4_096)
    unpacked = [m for _, _, frame in frames for m in frame]
    assert unpacked == messages
    for subject, payload, frame in frames:
        results = subject == frame_subject("fr", results=True)
        assert all(isinstance(m, ResultMessage) == results for m in frame)
        assert 1 <= len(frame) <= 50
        assert len(payload) <= 4_096 or len(frame) == 1
        assert decode_frame("fr", subject, payload) == frame
    assert len(frames) < len(messages) / 10


def test_decoding_is_strict() -> None:
    market = frame_subject("fr", results=False)
    result = frame_subject("fr", results=True)
    one = _odds(7)
    assert decode_frame("fr", market, encode_message(one)) == [one]  # a bare message
    assert decode_frame("fr", result, b"[" + encode_message(_cancel(3)) + b"]") == [_cancel(3)]

    def frame(*messages: AnyFeedMessage) -> bytes:
        return b"[" + b",".join(encode_message(m) for m in messages) + b"]"

    bad = [
        (market, b"[]"),
        (market, b"not json"),
        (market, b'[{"kind":"odds_change"}]'),
        (market, frame(_odds(1), _odds(3))),  # a gap
        (market, frame(_odds(2), _odds(1))),  # backwards
        (market, frame(_odds(1), _odds(2, producer="other"))),
        (market, frame(_odds(1), _cancel(2))),  # a result off the result subject
        (result, frame(_cancel(1), _odds(2))),
        (result, frame(Alive(producer="fr", cursor=1, ts_ms=0))),
    ]
    for subject, payload in bad:
        with pytest.raises(FeedFrameError):
            decode_frame("fr", subject, payload)


@pytest.mark.slow
def test_recovery_from_any_cursor_retries_and_bad_frames(nats_url: str) -> None:
    async def scenario() -> None:
        nc = await connect_nats(nats_url)
        try:
            stream = await NatsFeedStream.open(nc, "fr", replicas=1)
            messages = _messages(2_400)
            rng = random.Random(5)
            at = 0
            while at < 2_000:
                size = rng.choice((1, 2, 7, 30, 120))
                await stream.publish(messages[at : at + size])
                at = min(2_000, at + size)
            # A retry of stored messages is a no-op; an overlapping one adds the rest.
            await stream.publish(messages[1_990:2_000])
            await stream.publish(messages[1_995:2_100])
            with pytest.raises(FeedPublishRefused):
                await stream.publish(messages[2_101:2_110])  # a gap
            js_info = await nc.jetstream().stream_info(stream.stream)
            frames_stored = js_info.state.last_seq
            assert frames_stored < 2_100 / 2

            # A frame stored but its ack lost: the publisher's retry finds it
            # in the stream and does not store it again.
            subject, payload, frame = encode_frames(messages[2_100:2_110])[0]
            headers = {
                "Nats-Expected-Last-Sequence": str(frames_stored),
                "Nats-Msg-Id": f"fr:{frame[0].cursor}",
            }
            ack = json.loads((await nc.request(subject, payload, headers=headers)).data)
            assert ack["seq"] == frames_stored + 1, ack
            ack = json.loads((await nc.request(subject, payload, headers=headers)).data)
            assert ack.get("duplicate") or "error" in ack, ack  # never stored twice
            await stream.publish(messages[2_100:2_110])  # its view of the tail is stale
            js_info = await nc.jetstream().stream_info(stream.stream)
            assert js_info.state.last_seq == frames_stored + 1
            # A frame that is not valid (a gap inside): every reader skips it.
            junk = b"[" + encode_message(_odds(2_200)) + b"," + encode_message(_odds(2_300)) + b"]"
            ack = json.loads(
                (
                    await nc.request(
                        frame_subject("fr", results=False),
                        junk,
                        headers={"Nats-Expected-Last-Sequence": str(frames_stored + 1)},
                    )
                ).data
            )
            assert ack["seq"] == frames_stored + 2, ack
            # A new publisher (fresh view of the tail) carries on after the last valid frame.
            later = NatsFeedStream(nc, "fr")
            assert await later.tail_cursor() == 2_110
            await later.publish(messages[2_110:2_400])
            assert await later.tail_cursor() == 2_400

            reader = NatsFeedStream(nc, "fr")
            for after in (0, 1, 2, 5, 99, 1_000, 1_994, 1_999, 2_105, 2_109, 2_110, 2_399):
                chunk, through = await reader.read(after, max_messages=37, wait_ms=1_000)
                assert chunk == messages[after : after + 37], after
                assert through == chunk[-1].cursor
                fresh = NatsFeedStream(nc, "fr")  # no hint: a binary search
                assert await fresh.get(after + 1) == messages[after]
            assert await reader.read(2_400, max_messages=10, wait_ms=50) == ([], 2_400)

            everything: list[AnyFeedMessage] = []
            cursor = 0
            while cursor < 2_400:
                chunk, cursor = await reader.read(cursor, max_messages=333, wait_ms=1_000)
                everything.extend(chunk)
            assert everything == messages
            assert reader.malformed >= 1

            for after in (0, 777, 2_109, 2_350):
                got: list[AnyFeedMessage] = []
                iterator = NatsFeedStream(nc, "fr").iterate(after)
                async with asyncio.timeout(20):
                    async for message in iterator:
                        got.append(message)
                        if message.cursor == 2_400:
                            break
                await iterator.aclose()  # type: ignore[attr-defined]
                assert got == messages[after:], after

            # Result frames are the only stream messages on result subjects.
            result_runs = sum(
                1
                for i, m in enumerate(messages)
                if isinstance(m, ResultMessage)
                and (i == 0 or not isinstance(messages[i - 1], ResultMessage))
            )
            sub = await nc.jetstream().subscribe("feed.fr.result.>", ordered_consumer=True)
            seen: list[AnyFeedMessage] = []
            async with asyncio.timeout(10):
                while len(seen) < sum(isinstance(m, ResultMessage) for m in messages):
                    msg = await sub.next_msg(timeout=5)
                    seen.extend(decode_frame("fr", msg.subject, msg.data))
            await sub.unsubscribe()
            assert seen == [m for m in messages if isinstance(m, ResultMessage)]
            assert result_runs >= 2
            assert seen
        finally:
            await close_nats(nc)

    asyncio.run(scenario())


def test_a_busy_simulator_publishes_a_frame_per_busy_tick_at_most() -> None:
    """At 2,000 changes/s (more than BUSY_ABOVE_MESSAGES_PER_S) frames go out
    at most once per BUSY_INTERVAL_MS: each frame is an fsynced R3 append, and
    the ingester would take them a round per 50 ms anyway."""

    class Stream:
        def __init__(self) -> None:
            self.publishes: list[tuple[float, int]] = []

        async def publish(self, messages: list[AnyFeedMessage]) -> None:
            self.publishes.append((time.monotonic(), len(messages)))

    class Worlds:
        async def put(self, key: str, value: bytes) -> None:
            return None

    async def scenario() -> Stream:
        stream = Stream()
        config = SimulatorConfig(producer="fr", seed=3, odds_changes_per_s=2_000)
        simulator = Simulator(config, epoch_ms=int(time.time() * 1000))
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        await publish_forever(stream, Worlds(), simulator, stop)  # type: ignore[arg-type]
        return stream

    publishes = asyncio.run(scenario()).publishes
    assert sum(count for _, count in publishes) > 1_000
    gaps_ms = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(publishes[1:])]
    assert gaps_ms and min(gaps_ms) >= BUSY_INTERVAL_MS - 2, gaps_ms
