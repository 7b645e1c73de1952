"""The simulated odds provider, as a process: it runs the simulator against
the wall clock and publishes every message into the producer's feed stream.

    python -m ironbook.services.feed.provider --nats URL --producer sim --seed 1 --rate 200

Restart-safe: on start it reads the stream's tail. An empty stream starts a
new world now. Otherwise the simulator is replayed (it is deterministic) up
to the stored tail, checked against the stored message there, and carries on
from it: the downtime is skipped, nothing is published twice and no cursor is
ever missing. A stream written with another seed or rate is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

import msgspec

from ironbook.adapters import eventloop
from ironbook.adapters.feed.messages import AnyFeedMessage
from ironbook.adapters.feed.nats_stream import NatsFeedStream
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig
from ironbook.adapters.nats.provision import close_nats, connect_nats

log = logging.getLogger("ironbook.feed.provider")

MAX_PUBLISH_BATCH = 2_000
MAX_SLEEP_MS = 100
STATS_INTERVAL_S = 10.0


class WorldMismatch(Exception):
    """The stream holds a feed this simulator config does not produce."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _same_but_time(a: AnyFeedMessage, b: AnyFeedMessage) -> bool:
    return msgspec.structs.replace(a, ts_ms=0) == msgspec.structs.replace(b, ts_ms=0)


async def resume_simulator(stream: NatsFeedStream, config: SimulatorConfig) -> Simulator:
    """A simulator positioned after the stream's tail, its future moved to now."""
    tail = await stream.tail_cursor()
    if tail == 0:
        log.info("feed %s is empty: a new world starts now", stream.stream)
        return Simulator(config, epoch_ms=_now_ms())
    first = await stream.get(1)
    last = await stream.get(tail)
    if first is None or last is None:
        raise WorldMismatch(f"{stream.stream}: cannot read messages 1 and {tail}")
    started = time.monotonic()
    simulator = Simulator(config, epoch_ms=first.ts_ms)
    replayed: AnyFeedMessage | None = None
    while simulator.cursor < tail:
        replayed = simulator.next()
    assert replayed is not None
    if not _same_but_time(replayed, last):
        raise WorldMismatch(
            f"{stream.stream} holds another world at cursor {tail} (was it written with "
            "another --seed or --rate? use another --producer for a new world)"
        )
    downtime_ms = max(0, _now_ms() - replayed.ts_ms)
    simulator.shift_ms(downtime_ms)
    log.info(
        "feed %s resumed after cursor %d (replayed in %.1f s; %d ms of downtime skipped)",
        stream.stream,
        tail,
        time.monotonic() - started,
        downtime_ms,
    )
    return simulator


async def publish_forever(
    stream: NatsFeedStream, simulator: Simulator, stop: asyncio.Event
) -> None:
    """Publish each message when it is due; fall behind, then catch up, under load."""
    published = 0
    stats_at = time.monotonic()
    while not stop.is_set():
        due = simulator.take_due(_now_ms(), MAX_PUBLISH_BATCH)
        if due:
            await stream.publish(due)
            published += len(due)
        else:
            wait_ms = min(MAX_SLEEP_MS, max(1, simulator.next_ts_ms() - _now_ms()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait_ms / 1000)
        elapsed_s = time.monotonic() - stats_at
        if elapsed_s >= STATS_INTERVAL_S:
            log.info(
                "published %d messages (%.0f/s), cursor %d, %d events live",
                published,
                published / elapsed_s,
                simulator.cursor,
                len(simulator.events),
            )
            published, stats_at = 0, time.monotonic()


async def serve(
    nats_urls: str, config: SimulatorConfig, *, replicas: int, stop: asyncio.Event
) -> int:
    nc = await connect_nats(nats_urls, name=f"feed-provider-{config.producer}")
    try:
        stream = await NatsFeedStream.open(nc, config.producer, replicas=replicas)
        try:
            simulator = await resume_simulator(stream, config)
        except WorldMismatch as err:
            log.error("%s", err)
            return 2
        await publish_forever(stream, simulator, stop)
    finally:
        await close_nats(nc)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ironbook.services.feed.provider",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nats", required=True, help="NATS server URLs, comma-separated")
    parser.add_argument("--producer", default="sim", help="producer name (default sim)")
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument(
        "--rate", type=int, default=200, help="odds changes per second (default 200)"
    )
    parser.add_argument("--football", type=int, default=4, help="matches at a time (default 4)")
    parser.add_argument("--races", type=int, default=3, help="races at a time (default 3)")
    parser.add_argument(
        "--pre-match-s", type=int, default=60, help="seconds from creation to start (default 60)"
    )
    parser.add_argument(
        "--replicas", type=int, default=3, help="JetStream replication factor (default 3)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = SimulatorConfig(
            producer=args.producer,
            seed=args.seed,
            odds_changes_per_s=args.rate,
            football_events=args.football,
            races=args.races,
            pre_match_s=args.pre_match_s,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(args.nats, config, replicas=args.replicas, stop=stop)

    return int(eventloop.run(run()))


if __name__ == "__main__":
    sys.exit(main())
