"""The odds benchmark: live prices from the feed to 1,000 WebSocket subscribers,
and ledger bet throughput while the feed runs.

In one run, on this machine, against a fresh local cluster (3 nats-server
nodes, R3, fsync always; 3 replicas; 2 gateway workers) in a temp dir:

1. Latency: `--subscribers` WebSocket clients, spread over `--client-processes`
   processes, each watch `--markets-per-subscriber` random markets of those the
   feed moves, while the feed runs at `--latency-rate` changes/s for
   `--latency-seconds` (after `--warmup-seconds`). Latency of a frame = the
   subscriber's wall clock when it arrives - the message's `feed_ts_ms` (when
   the feed produced the change): end to end, through the ledger, NATS, the
   gateway and the socket (`feed_ts_ms` is whole ms: a sample reads up to 1 ms
   high). `fanout_*_ms` measure from `published_ms`: the part after the ledger.
2. Throughput: closed-loop virtual bettors place bets through the real client
   library (as `bench/ledger.py` does) for `--seconds`, with the feed off, at
   1,000 and at 5,000 price changes/s. The subscribers are disconnected for
   these phases unless `--subscribers-during-throughput` is given (they run on
   the same cores and would be charged to the ledger).

The feed, per phase:
  --feed sim        (default; "simulator" in the output) the real feed
                    processes of `services/feed` - simulator, ingester,
                    settlement - with a fresh producer at the phase's rate. The
                    simulator runs a meeting of ~11 markets; subscribers watch
                    1 each and the latency phase runs at 50 changes/s.
  --feed synthetic  this benchmark's own feed process over `--markets` markets:
                    random walks on the ladder, conflated per 10 ms tick,
                    written to the ledger (`UpdatePrices`), then published with
                    the feed's message shape. Subscribers watch 5 markets each;
                    the latency phase runs at 1,000 changes/s.

CPU seconds of NATS, replicas, gateways, history projectors, feed and
subscriber processes are reported per phase: on a shared machine CPU per
operation is the fair comparison; wall-clock numbers need a quiet machine.

    python bench/odds.py [--json] [--quick]      or      ironbook bench odds [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.nats.localproc import ManagedProcess, PortLease
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.benchmarks.ledger import _drive, _setup, connect_bench_client, percentile_ms
from ironbook.client import LedgerClient
from ironbook.core.odds import format_decimal, snap_to_ladder, ticks_away
from ironbook.services.feed.processes import FeedOptions, feed_processes
from ironbook.services.gateway.auth import load_or_create_secret, mint_token
from ironbook.services.gateway.settings import GatewaySettings
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

SELECTIONS = ("home", "draw", "away")
FEED_TICK_S = 0.01
THROUGHPUT_RATES = (0, 1_000, 5_000)
"""Feed changes/s of the throughput phases, in the order they run."""
SIM_DISCOVERY_S = 2.0
"""The simulator's markets are learned from the odds it publishes this long."""
GATEWAY_LIMITS = {
    # One address opens every subscriber: the per-address limits of the edge
    # are for the internet, not for this benchmark.
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "1000000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_IP_BURST": "1000000",
}
CONNECT_CONCURRENCY = 50
CONNECT_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 30.0
RESULT_LINE_LIMIT_BYTES = 512 * 1024 * 1024
"""A subscriber process reports every latency sample on one line."""
READY_TIMEOUT_S = 300.0
DRAIN_S = 1.0
"""After the feed stops, subscribers keep reading this long for frames in flight."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def odds_market_id(index: int) -> str:
    return f"odds-m{index}"


def odds_event_id(index: int, markets_per_event: int) -> str:
    return f"odds-e{index // markets_per_event}"


# CPU accounting from /proc (Linux).


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


CLUSTER_GROUPS = ("nats", "replicas", "gateways", "history")


class CpuMeter:
    """CPU seconds used by the cluster's processes between `start` and `stop`."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        feed_pids: list[int | None],
        subscriber_pids: list[int | None] | None = None,
    ) -> None:
        self._groups: dict[str, list[int | None]] = {
            "nats": [node.process.pid for node in cluster.nats.nodes.values()],
            "replicas": [p.pid for p in cluster.replicas.values()],
            "gateways": [p.pid for name, p in cluster.gateways.items() if name.startswith("gw-")],
            # The history projectors: every bet, also into the gateway's SQLite.
            "history": [
                p.pid for name, p in cluster.gateways.items() if name.startswith("history-")
            ],
            "feed": feed_pids,
            "subscribers": subscriber_pids or [],
        }
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._wall = 0.0
        self._own = 0.0

    def _sample(self) -> dict[str, float]:
        return {group: sum(_cpu_s(pid) for pid in pids) for group, pids in self._groups.items()}

    def start(self) -> None:
        self._start = self._sample()
        self._machine = _machine_busy()
        self._wall = time.monotonic()
        self._own = time.process_time()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        busy, total = _machine_busy()
        used = {f"{g}_cpu_s": round(end[g] - self._start[g], 2) for g in end}
        cluster_s = sum(end[g] - self._start[g] for g in CLUSTER_GROUPS)
        used["cluster_cpu_s"] = round(cluster_s, 2)
        used["cluster_and_feed_cpu_s"] = round(cluster_s + end["feed"] - self._start["feed"], 2)
        # The driver (bettors, and the synthetic feed's pacing), not its helpers.
        used["bench_cpu_s"] = round(time.process_time() - self._own, 2)
        total_delta = total - self._machine[1]
        used["machine_busy"] = (
            round((busy - self._machine[0]) / total_delta, 3) if total_delta else 0.0
        )
        used["wall_s"] = round(time.monotonic() - self._wall, 2)
        return used


# The synthetic feed.


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
                "published_ms": now_ms(),
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
                changed[index] = (self.cursor, now_ms())
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


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Commands from the parent, one per line, until it closes the pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.strip()


async def _feed_process(args: argparse.Namespace) -> None:
    """The synthetic feed as its own process, as the feed service is: connect,
    print "ready", run on "go", print one JSON line of `FeedStats`."""
    client = await LedgerClient.connect(args.nats, partitions=args.partitions)
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
        async for line in _stdin_lines():
            if line == b"go":
                break
        stats = await feed.run(args.rate, args.run_seconds, random.Random(args.seed + 1))
        print(json.dumps(asdict(stats)), flush=True)
    finally:
        await close_nats(nc)
        await client.close()


class ChildProcess:
    """A benchmark helper process driven over stdin/stdout lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *argv: str) -> ChildProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ironbook.benchmarks.odds",
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=RESULT_LINE_LIMIT_BYTES,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"a benchmark process failed to start: {line!r}")

    async def tell(self, command: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + b"\n")
        await self.process.stdin.drain()

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"a benchmark process exited ({self.process.returncode})")
        result: dict[str, Any] = json.loads(line)
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.kill()
        return result

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


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
            "--feed-process",
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
        processes = feed_processes(
            options,
            nats_url=cluster.nats_url,
            partitions=cluster.partitions,
            replicas=min(3, len(cluster.nats.nodes)),
            logs_dir=cluster.data_dir / "logs",
        )
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


async def _start_feed(
    cluster: LocalCluster, args: argparse.Namespace, rate: float, seconds: float, phase: int
) -> FeedRun:
    if args.feed == "sim":
        return await SimFeedRun.start(cluster, args, rate, seconds, phase)
    return await SyntheticFeedRun.start(cluster, args, rate, seconds, phase)


# Subscriber processes.


class _Times(msgspec.Struct):
    feed_ts_ms: int
    published_ms: int


class _Frame(msgspec.Struct):
    """The part of a server frame a subscriber measures (other fields ignored)."""

    type: str
    data: _Times | None = None


decode_frame = msgspec.json.Decoder(_Frame).decode


async def _subscriber_process(args: argparse.Namespace) -> None:
    """One client process: connect `--count` subscribers, print "ready", record
    latencies until stdin says "stop" ("reset" forgets the samples so far),
    print one JSON line of results."""
    from websockets.asyncio.client import ClientConnection, connect  # noqa: PLC0415

    rng = random.Random(args.seed)
    market_ids = args.market_ids.split(",")
    latencies_ms: list[float] = []
    fanout_ms: list[float] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect_with_retries() -> ClientConnection:
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                # No permessage-deflate: compressing every frame per connection
                # would cost the gateway more than the fan-out itself.
                return await connect(
                    f"{args.url}?access_token={args.token}",
                    compression=None,
                    max_queue=64,
                    open_timeout=CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError):
                if attempt == CONNECT_ATTEMPTS:
                    raise
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    async def open_one(index: int) -> ClientConnection:
        markets = rng.sample(market_ids, min(len(market_ids), args.markets_per_subscriber))
        async with gate:
            ws = await connect_with_retries()
            await ws.send(json.dumps({"action": "subscribe", "markets": markets}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            while reply.get("type") == "odds":  # prices of markets watched already
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("type") != "subscribed":
                raise RuntimeError(f"subscriber {index}: {reply}")
        return ws

    lost: list[str] = []
    """Connections that ended while measuring (e.g. a ping timeout under load)."""

    async def read(ws: ClientConnection) -> None:
        try:
            async for text in ws:
                received_ms = time.time_ns() / 1_000_000
                frame = decode_frame(text)
                if frame.type == "odds" and frame.data is not None:
                    latencies_ms.append(received_ms - frame.data.feed_ts_ms)
                    fanout_ms.append(received_ms - frame.data.published_ms)
                elif len(errors) < 5:
                    errors.append(str(text)[:200])
            lost.append(f"closed: {ws.close_code} {ws.close_reason}")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            lost.append(repr(err)[:200])

    sockets = list(await asyncio.gather(*(open_one(i) for i in range(args.count))))
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    print("ready", flush=True)
    async for line in _stdin_lines():
        if line == b"stop":
            break
        if line == b"reset":
            latencies_ms.clear()
            fanout_ms.clear()
    await asyncio.sleep(DRAIN_S)
    result = {
        "frames": len(latencies_ms),
        "latencies_ms": [round(x, 2) for x in latencies_ms],
        "fanout_ms": [round(x, 2) for x in fanout_ms],
        "errors": errors,
        "lost": len(lost),
        "lost_examples": lost[:3],
    }
    print(json.dumps(result), flush=True)
    for task in readers:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 5
        )


@dataclass
class Subscribers:
    """The subscriber processes."""

    children: list[ChildProcess] = field(default_factory=list)

    @classmethod
    async def start(
        cls, args: argparse.Namespace, ws_url: str, token: str, market_ids: list[str]
    ) -> Subscribers:
        group = cls()
        per_process = -(-args.subscribers // args.client_processes)
        remaining = args.subscribers
        try:
            for index in range(args.client_processes):
                count = min(per_process, remaining)
                remaining -= count
                if count <= 0:
                    break
                child = await ChildProcess.start(
                    "--subscriber-process",
                    "--url",
                    ws_url,
                    "--token",
                    token,
                    "--count",
                    str(count),
                    "--market-ids",
                    ",".join(market_ids),
                    "--markets-per-subscriber",
                    str(args.markets_per_subscriber),
                    "--seed",
                    str(args.seed * 1_000 + index),
                )
                group.children.append(child)
            for child in group.children:
                await child.wait_ready()
        except BaseException:
            group.kill()
            raise
        return group

    async def tell(self, command: bytes) -> None:
        for child in self.children:
            await child.tell(command)

    async def stop(self) -> list[dict[str, Any]]:
        await self.tell(b"stop")
        return [await child.result(60) for child in self.children]

    def kill(self) -> None:
        for child in self.children:
            child.kill()


# The run.


async def _wait_http_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {timeout_s} s")
            await asyncio.sleep(0.2)


async def _connect_subscribers(
    cluster: LocalCluster, args: argparse.Namespace, market_ids: list[str]
) -> Subscribers:
    assert cluster.http_url is not None
    secret = load_or_create_secret(GatewaySettings(data_dir=cluster.data_dir).secret_file)
    token = mint_token(secret, role="auditor", sub="odds-bench")
    ws_url = cluster.http_url.replace("http://", "ws://") + "/v1/odds/stream"
    _log(f"connecting {args.subscribers} subscribers to {len(market_ids)} markets ...")
    return await Subscribers.start(args, ws_url, token, market_ids)


async def _latency_phase(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.warmup_seconds + args.latency_seconds
    feed = await _start_feed(cluster, args, args.latency_rate, seconds, phase=1)
    subscribers = Subscribers()
    try:
        subscribers = await _connect_subscribers(cluster, args, feed.market_ids)
        _log(
            f"latency: {args.warmup_seconds} s warm-up, then {args.latency_seconds} s "
            f"at {args.latency_rate} changes/s ..."
        )
        await feed.go()
        await asyncio.sleep(args.warmup_seconds)
        await subscribers.tell(b"reset")
        meter = CpuMeter(
            cluster,
            feed_pids=feed.pids,
            subscriber_pids=[child.pid for child in subscribers.children],
        )
        meter.start()
        await asyncio.sleep(args.latency_seconds)
        cpu = meter.stop()
        stats = await feed.finish()
        results = await subscribers.stop()
    finally:
        subscribers.kill()
        feed.stop()
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    fanout = sorted(x for r in results for x in r["fanout_ms"])
    frames = len(latencies)
    return {
        "odds_p50_ms": percentile_ms(latencies, 0.50),
        "odds_p90_ms": percentile_ms(latencies, 0.90),
        "odds_p99_ms": percentile_ms(latencies, 0.99),
        "odds_p999_ms": percentile_ms(latencies, 0.999),
        "odds_max_ms": round(latencies[-1], 2) if latencies else None,
        "fanout_p50_ms": percentile_ms(fanout, 0.50),
        "fanout_p99_ms": percentile_ms(fanout, 0.99),
        "frames_received": frames,
        "markets_watched": len(feed.market_ids),
        "feed": stats,
        "subscriber_errors": [e for r in results for e in r["errors"]][:5],
        "subscribers_lost": sum(r["lost"] for r in results),
        "subscribers_lost_examples": [e for r in results for e in r["lost_examples"]][:3],
        "cpu": cpu,
        "gateway_cpu_us_per_frame": (
            round(cpu["gateways_cpu_s"] * 1e6 / frames, 1) if frames else None
        ),
    }


async def _throughput_phase(
    cluster: LocalCluster,
    client: LedgerClient,
    accounts: list[str],
    rate_per_s: int,
    args: argparse.Namespace,
    round_index: int,
) -> dict[str, Any]:
    _log(f"throughput: {args.concurrency} clients for {args.seconds} s, feed {rate_per_s}/s")
    # Every phase has its own request ids and its own feed producer: a request
    # id seen before is answered from the ledger's memory of its first outcome
    # (no new bet), and a producer seen before resumes its old world.
    tag = f"{args.run_tag}-r{round_index}-{rate_per_s}"
    phase = 2 + round_index * len(THROUGHPUT_RATES) + THROUGHPUT_RATES.index(rate_per_s)
    feed = (
        await _start_feed(cluster, args, rate_per_s, args.seconds, phase=phase)
        if rate_per_s
        else None
    )
    subscribers = Subscribers()
    try:
        if feed is not None and args.subscribers_during_throughput:
            subscribers = await _connect_subscribers(cluster, args, feed.market_ids)
        meter = CpuMeter(
            cluster,
            feed_pids=[] if feed is None else feed.pids,
            subscriber_pids=[child.pid for child in subscribers.children],
        )
        if feed is not None:
            await feed.go()
        meter.start()
        tally, elapsed_s = await _drive(
            client,
            accounts,
            concurrency=args.concurrency,
            seconds=args.seconds,
            seed=args.seed,
            run_tag=tag,
        )
        cpu = meter.stop()
        stats = None if feed is None else await feed.finish()
    finally:
        subscribers.kill()
        if feed is not None:
            feed.stop()
    placed = tally.accepted + tally.rejected
    result: dict[str, Any] = {
        "feed_rate_per_s": rate_per_s,
        "bets_per_s": round(placed / elapsed_s, 1),
        "bets": placed,
        "rejected": tally.rejected,
        "gave_up": tally.gave_up,
        "bet_p50_ms": percentile_ms(tally.latencies_ms, 0.50),
        "bet_p99_ms": percentile_ms(tally.latencies_ms, 0.99),
        "cpu": cpu,
        "cluster_cpu_ms_per_bet": (
            round(cpu["cluster_cpu_s"] * 1000 / placed, 4) if placed else None
        ),
    }
    if stats is not None:
        result["feed"] = stats
    return result


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _measure(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    assert cluster.http_url is not None
    await _wait_http_ready(cluster.http_url, READY_TIMEOUT_S)
    client = await connect_bench_client(cluster, args.client_batch)
    try:
        accounts = [f"acct-{i}" for i in range(args.accounts)]
        _log(f"setting up {args.accounts:,} accounts ...")
        await _setup(client, accounts, args.run_tag)
        if args.feed == "synthetic":
            markets = create_market_commands(
                args.markets, args.markets_per_event, args.seed, args.run_tag
            )
            for outcome in await client.submit_many(markets):
                if not isinstance(outcome, core.Accepted):
                    raise RuntimeError(f"odds market refused: {outcome}")
        latency = await _latency_phase(cluster, args)
        rounds: list[dict[int, dict[str, Any]]] = []
        for round_index in range(args.rounds):
            if args.rounds > 1:
                _log(f"throughput round {round_index + 1} of {args.rounds}")
            # Every other round runs the phases in reverse, so that a drift
            # over the run (the state grows, the cluster warms up) does not
            # favour whichever phase always comes first.
            order = THROUGHPUT_RATES if round_index % 2 == 0 else THROUGHPUT_RATES[::-1]
            phases = {}
            for position, rate in enumerate(order):
                phases[rate] = await _throughput_phase(
                    cluster, client, accounts, rate, args, round_index
                )
                phases[rate]["position_in_round"] = position
            rounds.append({rate: phases[rate] for rate in THROUGHPUT_RATES})
    finally:
        await client.close()
    bets_per_s = {
        rate: statistics.median(r[rate]["bets_per_s"] for r in rounds) for rate in THROUGHPUT_RATES
    }
    ratios = {rate: round_ratios(rounds, rate) for rate in THROUGHPUT_RATES[1:]}
    return {
        "latency": latency,
        "throughput": [{str(rate): phase for rate, phase in r.items()} for r in rounds],
        "bets_per_s_no_feed": bets_per_s[0],
        "bets_per_s_feed_1000": bets_per_s[1_000],
        "bets_per_s_feed_5000": bets_per_s[5_000],
        "ratio_feed_1000": _median_or_none(ratios[1_000]),
        "ratio_feed_5000": _median_or_none(ratios[5_000]),
        "round_ratios_feed_1000": ratios[1_000],
        "round_ratios_feed_5000": ratios[5_000],
    }


def round_ratios(rounds: list[dict[int, dict[str, Any]]], rate: int) -> list[float | None]:
    """Per round: bets/s with the feed at `rate` over bets/s without it, both
    measured within the same round, minutes apart at most. The run drifts (bets
    per second fell by a third over some runs, as the state grows): a ratio of
    phases from different rounds would measure the drift as well as the feed."""
    return [
        round(r[rate]["bets_per_s"] / r[0]["bets_per_s"], 3) if r[0]["bets_per_s"] else None
        for r in rounds
    ]


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def machine_info(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """The `machine` part of a benchmark's JSON (`load_at_start`: `os.getloadavg()`)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in load_at_start],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    ports = PortLease()
    (port,) = ports.take(1)
    try:
        with tempfile.TemporaryDirectory(prefix="ironbook-bench-odds-") as tmp:
            data_dir = Path(args.keep_dir) if args.keep_dir else Path(tmp) / "cluster"
            cluster = LocalCluster(
                data_dir,
                partitions=args.partitions,
                gateway=GatewayOptions(port=port, workers=args.gateway_workers, env=GATEWAY_LIMITS),
            )
            try:
                cluster.start()
                measured = eventloop.run(_measure(cluster, args))
            finally:
                cluster.stop()
                if args.keep_dir:
                    _log(f"the cluster's data and logs are in {data_dir}")
    finally:
        ports.release()
    latency = measured["latency"]
    return {
        "benchmark": "odds",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "feed": "simulator" if args.feed == "sim" else "synthetic",
        "odds_p50_ms": latency["odds_p50_ms"],
        "odds_p99_ms": latency["odds_p99_ms"],
        "subscribers": args.subscribers,
        "bets_per_s_no_feed": measured["bets_per_s_no_feed"],
        "bets_per_s_feed_1000": measured["bets_per_s_feed_1000"],
        "bets_per_s_feed_5000": measured["bets_per_s_feed_5000"],
        "ratio_feed_1000": measured["ratio_feed_1000"],
        "ratio_feed_5000": measured["ratio_feed_5000"],
        "round_ratios_feed_1000": measured["round_ratios_feed_1000"],
        "round_ratios_feed_5000": measured["round_ratios_feed_5000"],
        "floor": {
            "odds_p99_ms_max": 100,
            "odds_p99_met": latency["odds_p99_ms"] is not None and latency["odds_p99_ms"] <= 100,
            "ratio_feed_1000_min": 0.8,
            "ratio_met": (measured["ratio_feed_1000"] or 0) >= 0.8,
        },
        "parameters": {
            "subscribers": args.subscribers,
            "client_processes": args.client_processes,
            "markets": args.markets,
            "markets_per_event": args.markets_per_event,
            "markets_per_subscriber": args.markets_per_subscriber,
            "latency_rate_per_s": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "throughput_seconds": args.seconds,
            "throughput_rounds": args.rounds,
            "concurrency": args.concurrency,
            "accounts": args.accounts,
            "partitions": args.partitions,
            "gateway_workers": args.gateway_workers,
            "subscribers_during_throughput": args.subscribers_during_throughput,
            "seed": args.seed,
        },
        "latency": latency,
        "throughput": measured["throughput"],
        "machine": machine_info(load_at_start),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench odds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--feed",
        choices=("sim", "synthetic"),
        default="sim",
        help="sim: the real feed (simulator -> ingester -> ledger -> odds); "
        "synthetic: this benchmark's own feed process over --markets markets (default sim)",
    )
    p.add_argument("--subscribers", type=int, default=1_000, help="WebSocket clients (1000)")
    p.add_argument("--client-processes", type=int, default=2, help="processes holding them (2)")
    p.add_argument("--markets", type=int, default=1_000, help="markets whose prices move (1000)")
    p.add_argument("--markets-per-event", type=int, default=10, help="(10)")
    p.add_argument(
        "--markets-per-subscriber",
        type=int,
        help="markets each client watches (sim: 1 of the ~11 moving; synthetic: 5 of --markets)",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        help="price changes/s while latency is measured (sim: 50; synthetic: 1000)",
    )
    p.add_argument("--latency-seconds", type=float, default=20.0, help="(20)")
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="(3)")
    p.add_argument("--seconds", type=float, default=10.0, help="each throughput phase (10)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=(
            "run the three throughput phases this many times, every other round in "
            "reverse order; bets/s are the medians over rounds, ratios the medians of "
            "each round's own ratio (6; 1 with --quick)"
        ),
    )
    p.add_argument("--concurrency", type=int, default=2_000, help="virtual bettors (2000)")
    p.add_argument("--accounts", type=int, default=10_000, help="(10000)")
    p.add_argument("--client-batch", type=int, default=1_000, help="max commands per request")
    p.add_argument("--partitions", type=int, default=1, help="ledger partitions (1)")
    p.add_argument("--gateway-workers", type=int, default=2, help="(2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--subscribers-during-throughput",
        action="store_true",
        help="keep the subscribers connected while bets are measured",
    )
    p.add_argument(
        "--keep-dir",
        metavar="DIR",
        help="run the cluster in DIR (a new directory) and keep its data and logs afterwards",
    )
    p.add_argument("--quick", action="store_true", help="a short run (~1 min) to check it works")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    # Internal: the helper processes.
    p.add_argument("--subscriber-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--market-ids", help=argparse.SUPPRESS)
    p.add_argument("--feed-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nats", help=argparse.SUPPRESS)
    p.add_argument("--run-tag", default=f"o{os.getpid()}", help=argparse.SUPPRESS)
    p.add_argument("--cursor-start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--run-seconds", type=float, help=argparse.SUPPRESS)
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse parameters the run cannot use, before a cluster is started."""
    at_least_one = (
        "subscribers",
        "client_processes",
        "markets",
        "markets_per_event",
        "concurrency",
        "accounts",
        "client_batch",
        "partitions",
        "gateway_workers",
        "rounds",
    )
    for name in at_least_one:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.markets_per_subscriber < 1 or args.markets_per_subscriber > 100:
        p.error("--markets-per-subscriber must be 1..100 (the gateway's limit per connection)")
    if args.latency_rate <= 0 or args.latency_seconds <= 0 or args.seconds <= 0:
        p.error("--latency-rate, --latency-seconds and --seconds must be positive")
    if args.warmup_seconds < 0:
        p.error("--warmup-seconds cannot be negative")
    if args.keep_dir and Path(args.keep_dir).exists():
        p.error(f"--keep-dir {args.keep_dir} exists: give a new directory")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.subscriber_process:
        eventloop.run(_subscriber_process(args))
        return 0
    if args.feed_process:
        eventloop.run(_feed_process(args))
        return 0
    sim = args.feed == "sim"
    if args.markets_per_subscriber is None:
        args.markets_per_subscriber = 1 if sim else 5
    if args.latency_rate is None:
        args.latency_rate = 50 if sim else 1_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 6
    _check(p, args)
    if args.quick:
        args.latency_seconds = min(args.latency_seconds, 5.0)
        args.warmup_seconds = min(args.warmup_seconds, 1.0)
        args.seconds = min(args.seconds, 4.0)
        args.accounts = min(args.accounts, 2_000)
        args.concurrency = min(args.concurrency, 500)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(json.dumps(result, indent=2))
    print(
        f"\nodds feed -> {result['subscribers']} subscribers: p50 {result['odds_p50_ms']} ms, "
        f"p99 {result['odds_p99_ms']} ms; bets/s {result['bets_per_s_no_feed']:,.0f} no feed, "
        f"{result['bets_per_s_feed_1000']:,.0f} at 1000/s ({result['ratio_feed_1000']}), "
        f"{result['bets_per_s_feed_5000']:,.0f} at 5000/s ({result['ratio_feed_5000']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
