"""The odds benchmark's feeds: the real feed processes, or its own synthetic one.

`SimFeedRun` starts the feed of `services/feed` (simulator, ingester,
settlement) for one phase; `SyntheticFeedRun` starts this module as a child
process (`python -m ironbook.benchmarks.odds_feeds`) that random-walks prices
on `--markets` markets, writes each 10 ms tick's changes to the ledger
(`UpdatePrices`) and publishes them with the feed's message shape."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats, connect_nats
from ironbook.benchmarks.children import READY_TIMEOUT_S, ChildProcess, stdin_lines
from ironbook.client import LedgerClient, connect_ledger
from ironbook.core.odds import format_decimal, snap_to_ladder, ticks_away
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.local_cluster import LocalCluster

SELECTIONS = ("home", "draw", "away")
FEED_TICK_S = 0.01
SIM_DISCOVERY_S = 2.0
"""The simulator's markets are learned from the odds it publishes this long."""
PROCESS_MODULE = "ironbook.benchmarks.odds_feeds"
_CLOCK = SystemClock()


def odds_market_id(index: int) -> str:
    return f"odds-m{index}"


def odds_event_id(index: int, markets_per_event: int) -> str:
    return f"odds-e{index // markets_per_event}"


@dataclass
class FeedStats:
    changes: int = 0
    """Price changes produced (before conflation)."""
    ledger_updates: int = 0
    published: int = 0
    rejected: int = 0
    ticks: int = 0
    late_ticks: int = 0
    """Ticks whose ledger write took longer than the tick: the next tick conflated more."""


def initial_prices(markets: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [
        [snap_to_ladder(rng.randint(150, 800), "nearest") for _ in SELECTIONS]
        for _ in range(markets)
    ]


def create_market_commands(
    markets: int, markets_per_event: int, seed: int, run_tag: str
) -> list[core.AnyCommand]:
    return [
        core.CreateMarket(
            request_id=f"{run_tag}-odds-market-{index}",
            market_id=odds_market_id(index),
            event_id=odds_event_id(index, markets_per_event),
            name=f"Odds bench {index}",
            selections=tuple(
                core.SelectionSpec(selection_id=s, name=s.title(), odds=odds)
                for s, odds in zip(SELECTIONS, prices, strict=True)
            ),
        )
        for index, prices in enumerate(initial_prices(markets, seed))
    ]


@dataclass
class SyntheticFeed:
    """Random-walk prices for `markets` markets, into the ledger, then onto NATS."""

    client: LedgerClient
    nc: NatsClient
    markets: int
    markets_per_event: int
    seed: int
    run_tag: str
    cursor: int = 0
    prices: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.prices = initial_prices(self.markets, self.seed)

    def message(self, index: int, cursor: int, feed_ts_ms: int) -> bytes:
        return json.dumps(
            {
                "event_id": odds_event_id(index, self.markets_per_event),
                "market_id": odds_market_id(index),
                "status": "open",
                "in_play": False,
                "prices": {
                    s: format_decimal(odds)
                    for s, odds in zip(SELECTIONS, self.prices[index], strict=True)
                },
                "cursor": cursor,
                "feed_ts_ms": feed_ts_ms,
                "published_ms": _CLOCK.now_ms(),
            },
            separators=(",", ":"),
        ).encode()

    async def run(self, rate_per_s: float, seconds: float, rng: random.Random) -> FeedStats:
        """`rate_per_s` changes/s for `seconds`: each tick, the changes due are
        made, conflated per market, committed to the ledger, and published."""
        stats = FeedStats()
        started = time.monotonic()
        deadline = started + seconds
        while (now := time.monotonic()) < deadline:
            due = int((now - started) * rate_per_s) - stats.changes
            # market index -> (cursor, feed_ts_ms) of its newest change
            changed: dict[int, tuple[int, int]] = {}
            for _ in range(due):
                index = rng.randrange(self.markets)
                selection = rng.randrange(len(SELECTIONS))
                prices = self.prices[index]
                prices[selection] = ticks_away(prices[selection], rng.choice((-1, 1)))
                self.cursor += 1
                changed[index] = (self.cursor, _CLOCK.now_ms())
            stats.changes += max(0, due)
            if changed:
                await self._commit_and_publish(changed, stats)
            stats.ticks += 1
            spent = time.monotonic() - now
            if spent > FEED_TICK_S:
                stats.late_ticks += 1
            else:
                await asyncio.sleep(FEED_TICK_S - spent)
        return stats

    async def _commit_and_publish(
        self, changed: dict[int, tuple[int, int]], stats: FeedStats
    ) -> None:
        commands: list[core.AnyCommand] = [
            core.UpdatePrices(
                request_id=f"{self.run_tag}-px-{cursor}",
                market_id=odds_market_id(index),
                prices=tuple(
                    core.SelectionPrice(selection_id=s, odds=odds)
                    for s, odds in zip(SELECTIONS, self.prices[index], strict=True)
                ),
            )
            for index, (cursor, _) in changed.items()
        ]
        outcomes = await self.client.submit_many(commands)
        stats.ledger_updates += len(commands)
        for (index, (cursor, feed_ts_ms)), outcome in zip(changed.items(), outcomes, strict=True):
            if not isinstance(outcome, core.Accepted):
                stats.rejected += 1
                continue
            subject = f"odds.{odds_event_id(index, self.markets_per_event)}.{odds_market_id(index)}"
            await self.nc.publish(subject, self.message(index, cursor, feed_ts_ms))
            stats.published += 1
        await self.nc.flush()


async def _feed_process(args: argparse.Namespace) -> None:
    """The synthetic feed as its own process, as the feed service is: connect,
    print "ready", run on "go", print one JSON line of `FeedStats`."""
    client = await connect_ledger(
        NatsEndpoint(args.nats),
        partitions=args.partitions,
        issuer=core.acting("bench"),
    )
    nc = await connect_nats(args.nats, name="ironbook-odds-bench-feed")
    try:
        feed = SyntheticFeed(
            client=client,
            nc=nc,
            markets=args.markets,
            markets_per_event=args.markets_per_event,
            seed=args.seed,
            run_tag=args.run_tag,
            cursor=args.cursor_start,
        )
        print("ready", flush=True)
        async for line in stdin_lines():
            if line == b"go":
                break
        stats = await feed.run(args.rate, args.run_seconds, random.Random(args.seed + 1))
        print(json.dumps(asdict(stats)), flush=True)
    finally:
        await close_nats(nc)
        await client.close()


class SyntheticFeedRun:
    """The synthetic feed process for one phase: runs `seconds` from `go`."""

    def __init__(self, child: ChildProcess, markets: int) -> None:
        self.child = child
        self.market_ids = [odds_market_id(i) for i in range(markets)]

    @classmethod
    async def start(
        cls,
        cluster: LocalCluster,
        args: argparse.Namespace,
        rate: float,
        seconds: float,
        phase: int,
    ) -> SyntheticFeedRun:
        child = await ChildProcess.start(
            PROCESS_MODULE,
            "--nats",
            cluster.nats_url,
            "--partitions",
            str(cluster.partitions),
            "--markets",
            str(args.markets),
            "--markets-per-event",
            str(args.markets_per_event),
            "--seed",
            str(args.seed + phase),
            "--run-tag",
            f"{args.run_tag}-f{phase}",
            "--cursor-start",
            str(phase * 1_000_000_000),
            "--rate",
            str(rate),
            "--run-seconds",
            str(seconds),
        )
        try:
            await child.wait_ready()
        except BaseException:
            child.kill()
            raise
        return cls(child, args.markets)

    @property
    def pids(self) -> list[int | None]:
        return [self.child.pid]

    async def go(self) -> None:
        await self.child.tell(b"go")

    async def finish(self) -> dict[str, Any]:
        return await self.child.result(timeout_s=60)

    def stop(self) -> None:
        self.child.kill()


class SimFeedRun:
    """The real feed for one phase: the simulator, ingester and settlement
    processes (`services/feed`) of a fresh producer at `rate` changes/s."""

    def __init__(self, processes: dict[str, ManagedProcess], nc: NatsClient) -> None:
        self.processes = processes
        self.nc = nc
        self.published = 0
        self.seen: set[str] = set()
        self.market_ids: list[str] = []
        self._counting_since = time.monotonic()

    @classmethod
    async def start(
        cls,
        cluster: LocalCluster,
        args: argparse.Namespace,
        rate: float,
        seconds: float,
        phase: int,
    ) -> SimFeedRun:
        options = FeedOptions(
            source="sim", producer=f"bench{args.run_tag}x{phase}", rate=int(rate), seed=args.seed
        )
        processes = cluster.feed_processes(options)
        nc = await connect_nats(cluster.nats_url, name="ironbook-odds-bench-count")
        run = cls(processes, nc)
        try:
            await nc.subscribe("odds.>", cb=run._count)
            for process in processes.values():
                process.start()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not run.published:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the feed published no odds within {READY_TIMEOUT_S} s")
                await asyncio.sleep(0.1)
            await asyncio.sleep(SIM_DISCOVERY_S)
        except BaseException:
            run.stop()
            await close_nats(nc)
            raise
        run.market_ids = sorted(run.seen)
        return run

    async def _count(self, msg: Msg) -> None:
        self.published += 1
        self.seen.add(msg.subject.rsplit(".", 1)[1])

    @property
    def pids(self) -> list[int | None]:
        return [process.pid for process in self.processes.values()]

    async def go(self) -> None:
        self.published = 0
        self._counting_since = time.monotonic()

    async def finish(self) -> dict[str, Any]:
        elapsed_s = time.monotonic() - self._counting_since
        result = {
            "odds_published": self.published,
            "odds_published_per_s": round(self.published / elapsed_s, 1),
            "markets_moving": len(self.seen),
        }
        await close_nats(self.nc)
        return result

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.stop(timeout_ms=10_000)


FeedRun = SyntheticFeedRun | SimFeedRun


async def start_feed(
    cluster: LocalCluster, args: argparse.Namespace, rate: float, seconds: float, phase: int
) -> FeedRun:
    if args.feed == "sim":
        return await SimFeedRun.start(cluster, args, rate, seconds, phase)
    return await SyntheticFeedRun.start(cluster, args, rate, seconds, phase)


def main(argv: list[str] | None = None) -> int:
    """The synthetic feed process (started by `SyntheticFeedRun`)."""
    p = argparse.ArgumentParser(description="the odds benchmark's synthetic feed process")
    p.add_argument("--nats", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--markets", type=int, required=True)
    p.add_argument("--markets-per-event", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run-tag", required=True)
    p.add_argument("--cursor-start", type=int, default=0)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--run-seconds", type=float, required=True)
    eventloop.run(_feed_process(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
