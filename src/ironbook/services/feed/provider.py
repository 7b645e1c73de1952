"""The simulated odds provider, as a process: it runs the simulator against
the wall clock and publishes every message into the producer's feed stream,
framed: the messages due in a tick (`--frame-ms`, default 20) go out as one
JetStream message (see `adapters.feed.nats_stream`).

    python -m ironbook.bootstrap feed-sim --nats URL --producer sim --seed 1 --rate 200

Restart-safe: on start it reads the stream's tail and the world it was
running (KV bucket `FEED_WORLDS`: first cursor, epoch, seed, rate). The
simulator is deterministic: it is replayed up to the stored tail, checked
against the stored message there, and carries on from it (the downtime is
skipped; nothing is published twice, no cursor is missing). A world it cannot
replay (another seed or rate, or a new version of the simulator) is replaced:
the markets it left unfinished are closed and cancelled through the feed (bets
void), and a new world starts after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from ironbook.adapters.feed.messages import (
    AnyFeedMessage,
    BetCancel,
    BetSettlement,
    BetStop,
    NewMarket,
    OddsChange,
    RollbackBetSettlement,
)
from ironbook.adapters.feed.nats_stream import FeedPublishRefused, NatsFeedStream
from ironbook.adapters.feed.provider import FeedUnavailable
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig, SimulatorState
from ironbook.adapters.nats.provision import open_or_create
from ironbook.replication.concurrency import wait_for
from ironbook.services.feed.pacing import BUSY_INTERVAL_MS, busy
from ironbook.services.service_metrics import ProviderCounts

log = logging.getLogger("ironbook.feed.provider")

MAX_PUBLISH_BATCH = 2_000
MAX_SLEEP_MS = 100
FRAME_MS = 20
"""Default tick: the messages due within it go out as one frame (one
JetStream message), so NATS pays per tick, not per message."""
STATS_INTERVAL_S = 10.0
START_ATTEMPTS = 30
START_RETRY_S = 1.0
CHECKPOINT_EVERY_MESSAGES = 50_000
CHECKPOINT_EVERY_S = 30.0


WORLDS_BUCKET = "FEED_WORLDS"
"""KV bucket: producer -> the `World` its simulator is running."""
FOLD_CHUNK = 5_000
REPLACED_REASON = "the simulated world was replaced (new code, seed or rate)"


class World(msgspec.Struct, frozen=True):
    """Where the current simulated world starts in the feed, and how to
    recreate it (the simulator is deterministic from these)."""

    start_cursor: int
    epoch_ms: int
    seed: int
    rate: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _same_but_time(a: AnyFeedMessage, b: AnyFeedMessage) -> bool:
    return msgspec.structs.replace(a, ts_ms=0) == msgspec.structs.replace(b, ts_ms=0)


async def open_worlds(nc: NatsClient, *, replicas: int) -> KeyValue:
    js = nc.jetstream()
    return await open_or_create(
        f"kv bucket {WORLDS_BUCKET}",
        lambda: js.key_value(WORLDS_BUCKET),
        lambda: js.create_key_value(bucket=WORLDS_BUCKET, history=1, replicas=replicas),
    )


async def _load_world(worlds: KeyValue, producer: str) -> World | None:
    try:
        entry = await worlds.get(producer)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    try:
        return msgspec.json.decode(entry.value, type=World)
    except msgspec.MsgspecError:
        log.error("unreadable world record for %s: starting a new world", producer)
        return None


async def resume_simulator(
    stream: NatsFeedStream, worlds: KeyValue, config: SimulatorConfig
) -> Simulator:
    """A simulator positioned after the stream's tail, its future moved to now.

    The world recorded for the producer is replayed up to the tail and checked
    against the stored message there. A world that cannot be replayed (the
    simulator's code, seed or rate changed) is replaced: every market it left
    unfinished is closed and cancelled (bets void) through the feed, and a
    new world starts after it."""
    tail = await stream.tail_cursor()
    world = await _load_world(worlds, config.producer)
    same_config = world is not None and (world.seed, world.rate) == (
        config.seed,
        config.odds_changes_per_s,
    )
    if world is not None and same_config and world.start_cursor <= tail + 1:
        simulator = await _replay(stream, worlds, world, config, tail)
        if simulator is not None:
            return simulator
    if tail == 0:
        log.info("feed %s is empty: a new world starts now", stream.stream)
    else:
        log.warning(
            "feed %s: the world up to cursor %d cannot be replayed by this simulator "
            "(seed %d, rate %d): replacing it",
            stream.stream,
            tail,
            config.seed,
            config.odds_changes_per_s,
        )
        tail = await _close_world(stream, tail)
    world = World(
        start_cursor=tail + 1, epoch_ms=_now_ms(), seed=config.seed, rate=config.odds_changes_per_s
    )
    await worlds.put(config.producer, msgspec.json.encode(world))
    return Simulator(config, epoch_ms=world.epoch_ms, first_cursor=world.start_cursor)


class Checkpoint(msgspec.Struct, frozen=True):
    world_start: int
    state: SimulatorState


def checkpoint_key(producer: str) -> str:
    return f"{producer}.checkpoint"


async def _load_checkpoint(worlds: KeyValue, producer: str) -> Checkpoint | None:
    try:
        entry = await worlds.get(checkpoint_key(producer))
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    try:
        return msgspec.json.decode(entry.value, type=Checkpoint)
    except msgspec.MsgspecError as err:
        # A checkpoint of an older format is refused the same way: the world
        # replays from its start, which gives the same messages.
        log.warning(
            "checkpoint of %s unreadable or of an older format (%s): replaying from the start",
            producer,
            err,
        )
        return None


async def save_checkpoint(worlds: KeyValue, simulator: Simulator) -> None:
    """The simulator's state after the last message it handed out (all of
    them published): a restart continues from here instead of replaying."""
    checkpoint = Checkpoint(world_start=simulator.first_cursor, state=simulator.state())
    try:
        await worlds.put(checkpoint_key(simulator.config.producer), msgspec.json.encode(checkpoint))
    except (nats.errors.Error, nats.js.errors.Error, OSError) as err:
        log.warning("checkpoint at cursor %d not saved: %r", simulator.cursor, err)


async def _replay(
    stream: NatsFeedStream, worlds: KeyValue, world: World, config: SimulatorConfig, tail: int
) -> Simulator | None:
    """The world positioned after `tail`: from its newest checkpoint if there
    is a usable one, else from its start; None if it does not reproduce the
    stored message at `tail`."""
    checkpoint = await _load_checkpoint(worlds, config.producer)
    usable = (
        checkpoint is not None
        and checkpoint.world_start == world.start_cursor
        and checkpoint.state.yielded <= tail
    )
    for from_checkpoint in (True, False) if usable else (False,):
        started = time.monotonic()
        if from_checkpoint:
            assert checkpoint is not None
            try:
                simulator = Simulator.restore(config, checkpoint.state)
            except ValueError:
                continue
        else:
            simulator = Simulator(config, epoch_ms=world.epoch_ms, first_cursor=world.start_cursor)
        replay_from = simulator.cursor
        replayed: AnyFeedMessage | None = None
        while simulator.cursor < tail:
            replayed = simulator.next()
        if replayed is not None:
            stored = await stream.get(tail)
            if stored is None or not _same_but_time(replayed, stored):
                log.warning(
                    "feed %s: replay from cursor %d does not reproduce cursor %d",
                    stream.stream,
                    replay_from,
                    tail,
                )
                continue
        downtime_ms = max(0, _now_ms() - simulator.now_ms)
        simulator.shift_ms(downtime_ms)
        log.info(
            "feed %s resumed after cursor %d (replayed from cursor %d%s in %.1f s; "
            "%d ms of downtime skipped)",
            stream.stream,
            tail,
            replay_from,
            " (checkpoint)" if from_checkpoint else "",
            time.monotonic() - started,
            downtime_ms,
        )
        return simulator
    return None


async def _unfinished_markets(stream: NatsFeedStream, tail: int) -> dict[str, tuple[str, str]]:
    """market -> (event, status), for the markets up to `tail` not settled or cancelled."""
    live: dict[str, tuple[str, str]] = {}
    settled: dict[str, str] = {}
    cursor = 0
    while cursor < tail:
        messages, cursor = await stream.read(cursor, max_messages=FOLD_CHUNK, wait_ms=1_000)
        for message in messages:
            if isinstance(message, NewMarket):
                live[message.market_id] = (message.event_id, "open")
            elif isinstance(message, OddsChange):
                if message.status is not None and message.market_id in live:
                    live[message.market_id] = (message.event_id, message.status)
            elif isinstance(message, BetStop):
                for market_id in message.market_ids:
                    if market_id in live:
                        live[market_id] = (message.event_id, "suspended")
            elif isinstance(message, BetSettlement):
                if message.certainty == "confirmed" and message.market_id in live:
                    del live[message.market_id]
                    settled[message.market_id] = message.event_id
            elif isinstance(message, RollbackBetSettlement):
                if message.market_id in settled:
                    live[message.market_id] = (settled.pop(message.market_id), "closed")
            elif isinstance(message, BetCancel) and message.start_ms is None:
                live.pop(message.market_id, None)
                settled.pop(message.market_id, None)
    return live


async def _close_world(stream: NatsFeedStream, tail: int) -> int:
    """Close and cancel every market the feed left unfinished; the new tail."""
    live = await _unfinished_markets(stream, tail)
    # Every close first, then every cancel: two runs, so a few frames.
    closing: list[AnyFeedMessage] = []
    now_ms = _now_ms()
    for market_id, (event_id, status) in live.items():
        if status != "closed":
            tail += 1
            closing.append(
                OddsChange(
                    producer=stream.producer,
                    cursor=tail,
                    ts_ms=now_ms,
                    event_id=event_id,
                    market_id=market_id,
                    status="closed",
                )
            )
    for market_id, (event_id, _) in live.items():
        tail += 1
        closing.append(
            BetCancel(
                producer=stream.producer,
                cursor=tail,
                ts_ms=now_ms,
                event_id=event_id,
                market_id=market_id,
                reason=REPLACED_REASON,
            )
        )
    for start in range(0, len(closing), 1_000):
        await stream.publish(closing[start : start + 1_000])
    log.warning("closed and cancelled %d unfinished market(s) of the old world", len(live))
    return tail


async def publish_forever(
    stream: NatsFeedStream,
    worlds: KeyValue,
    simulator: Simulator,
    stop: asyncio.Event,
    *,
    frame_ms: int = FRAME_MS,
    counts: ProviderCounts | None = None,
) -> None:
    """Publish the messages due, at most one publish per `frame_ms` tick (all
    the messages due then, framed; `BUSY_INTERVAL_MS` while busy); fall behind,
    then catch up, under load.
    Checkpoint the simulator now and then, and when stopped; `counts` (the
    metrics) adds up what is published."""
    counts = counts or ProviderCounts()
    published = frames = 0
    stats_at = checkpoint_at = time.monotonic()
    checkpoint_cursor = simulator.cursor
    last_publish = stats_at - frame_ms / 1000
    tick_ms = frame_ms
    while not stop.is_set():
        tick_left_ms = tick_ms - (time.monotonic() - last_publish) * 1000
        due = [] if tick_left_ms > 0 else simulator.take_due(_now_ms(), MAX_PUBLISH_BATCH)
        if due:
            now = time.monotonic()
            since_s, last_publish = now - last_publish, now
            await stream.publish(due)
            published += len(due)
            frames += 1
            counts.published_messages += len(due)
            counts.publishes += 1
            counts.cursor = simulator.cursor
            tick_ms = max(frame_ms, BUSY_INTERVAL_MS) if busy(len(due), since_s) else frame_ms
        else:
            wait_ms = min(MAX_SLEEP_MS, max(1, tick_left_ms, simulator.next_ts_ms() - _now_ms()))
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), timeout=wait_ms / 1000)
        now = time.monotonic()
        if simulator.cursor - checkpoint_cursor >= CHECKPOINT_EVERY_MESSAGES or (
            now - checkpoint_at >= CHECKPOINT_EVERY_S and simulator.cursor > checkpoint_cursor
        ):
            await save_checkpoint(worlds, simulator)
            checkpoint_at, checkpoint_cursor = now, simulator.cursor
        elapsed_s = now - stats_at
        if elapsed_s >= STATS_INTERVAL_S:
            log.info(
                "published %d messages (%.0f/s) in %d publishes, cursor %d, %d events live",
                published,
                published / elapsed_s,
                frames,
                simulator.cursor,
                simulator.live_events,
            )
            published, frames, stats_at = 0, 0, now
    await save_checkpoint(worlds, simulator)


async def _start(
    stream: NatsFeedStream, worlds: KeyValue, config: SimulatorConfig, stop: asyncio.Event
) -> Simulator | None:
    """`resume_simulator`, retried while JetStream is not answering yet (a
    cluster that is starting); None if stopped first. Every step of it is
    safe to repeat."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return await resume_simulator(stream, worlds, config)
        except (nats.errors.Error, FeedUnavailable, FeedPublishRefused) as err:
            if attempt == START_ATTEMPTS:
                raise
            log.warning("starting (attempt %d/%d): %r", attempt, START_ATTEMPTS, err)
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), timeout=START_RETRY_S)
        if stop.is_set():
            return None
    raise AssertionError("unreachable")


async def serve(
    nc: NatsClient,
    config: SimulatorConfig,
    *,
    replicas: int,
    stop: asyncio.Event,
    frame_ms: int = FRAME_MS,
    counts: ProviderCounts | None = None,
) -> None:
    stream = await NatsFeedStream.open(nc, config.producer, replicas=replicas)
    worlds = await open_worlds(nc, replicas=replicas)
    simulator = await _start(stream, worlds, config, stop)
    if simulator is not None:
        await publish_forever(stream, worlds, simulator, stop, frame_ms=frame_ms, counts=counts)
