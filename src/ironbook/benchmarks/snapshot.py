"""How long a follower's snapshot holds its event loop: encoded in process
(the baseline, as the simulator does) against encoded in a forked child (as
the replica service does), on the same state in the same run.

    ironbook bench snapshot [--bets 200000,500000] [--accounts N] [--json]

The state is built in this process with the pure core (one market, N open
bets), growing to each size in turn. At each size, on uvloop (the replica's
loop) with a task that asks to wake every 10 ms beside the write:

- `in_process`: `take_snapshot` (encode + SHA-256) and the store's
  `encode_object` (zstd), both on the loop: `loop_lag_ms` is how late the
  probe woke, the loop block a replica paid;
- `forked`: `ForkedSnapshotWriter.write`: `fork_ms` (the parent's fork()
  call, copying its page tables), `loop_lag_ms`, the child's wall and CPU
  time, and in a second write `child_private_dirty_peak_mb`, the most memory
  the child held of its own (copy-on-write pages it copied and its encoding
  buffers), sampled every 10 ms. The parent here is idle while the child
  runs; a replica applying entries meanwhile also copies the pages it writes.

Both paths must store the same bytes (checked). No NATS: the store keeps the
object in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.forked_snapshots import ForkedSnapshotWriter
from ironbook.adapters.nats.snapshots import encode_object
from ironbook.adapters.procfs import private_dirty_bytes, process_stat
from ironbook.benchmarks.common import command_line, log, machine_info, positive_ints
from ironbook.benchmarks.pure_core import bet_command, setup_state
from ironbook.replication.batch import ReplayState
from ironbook.replication.follower import InProcessSnapshotWriter, take_snapshot
from ironbook.replication.interfaces import Snapshot
from ironbook.replication.loop_blocks import LoopBlocks

T = TypeVar("T")
MEMORY_SAMPLE_S = 0.01
MB = 1_000_000


class _Objects:
    """The store, in memory: `put` as the NATS store encodes, and `put_object`."""

    def __init__(self) -> None:
        self.last = b""

    async def put(self, snapshot: Snapshot) -> int:
        return await self.put_object(snapshot.seq, encode_object(snapshot))

    async def put_object(self, seq: int, data: bytes) -> int:
        self.last = data
        return len(data)


class _MonotonicClock:
    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(ms / 1000)


async def _with_lag_probe(work: Awaitable[T]) -> tuple[T, int]:
    """`work`'s result and the longest the loop was held while it ran."""
    blocks = LoopBlocks()
    async with asyncio.TaskGroup() as tasks:
        probe = tasks.create_task(eventloop.watch_loop_lag(blocks))
        await asyncio.sleep(eventloop.LAG_PROBE_INTERVAL_MS / 1000 * 2)
        result = await work
        await asyncio.sleep(eventloop.LAG_PROBE_INTERVAL_MS / 1000 * 2)
        probe.cancel()
    return result, blocks.longest_ms().get("loop_lag", 0)


async def _child_memory_peak(writer: ForkedSnapshotWriter, write: Awaitable[T]) -> tuple[T, int]:
    """`write`'s result and the child's peak private dirty bytes."""
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            pid = writer.child_pid
            dirty = private_dirty_bytes(pid) if pid is not None else None
            peak = max(peak, dirty or 0)
            await asyncio.sleep(MEMORY_SAMPLE_S)

    async with asyncio.TaskGroup() as tasks:
        sampler = tasks.create_task(sample())
        result = await write
        sampler.cancel()
    return result, peak


async def _measure(replay: ReplayState) -> dict[str, Any]:
    capture = functools.partial(take_snapshot, replay, None)

    started = time.perf_counter()
    snapshot = capture()
    take_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    expected = encode_object(snapshot)
    encode_object_ms = (time.perf_counter() - started) * 1000
    del snapshot

    in_process_store = _Objects()
    in_process = InProcessSnapshotWriter(in_process_store, _MonotonicClock())  # type: ignore[arg-type]
    _, in_process_lag_ms = await _with_lag_probe(in_process.write(capture, LoopBlocks()))

    forked_store = _Objects()
    forked = ForkedSnapshotWriter(forked_store, encode=encode_object)
    blocks = LoopBlocks()
    _, forked_lag_ms = await _with_lag_probe(forked.write(capture, blocks))
    run = forked.last_run
    assert run is not None
    _, dirty_peak = await _child_memory_peak(forked, forked.write(capture, LoopBlocks()))
    assert in_process_store.last == forked_store.last == expected, (
        "the paths stored different bytes"
    )

    parent = process_stat(os.getpid())
    return {
        "bets": len(replay.state.bets),
        "state_bytes": len(core.snapshot_bytes(replay.state)),
        "object_bytes": len(expected),
        "parent_rss_mb": round((parent.rss_bytes if parent else 0) / MB, 1),
        "in_process": {
            "take_snapshot_ms": round(take_ms, 1),
            "encode_object_ms": round(encode_object_ms, 1),
            "loop_lag_ms": in_process_lag_ms,
        },
        "forked": {
            "fork_ms": round(run.fork_ms, 2),
            "loop_lag_ms": forked_lag_ms,
            "child_ms": round(run.child_ms, 1),
            "child_cpu_ms": round(run.child_cpu_ms, 1),
            "child_private_dirty_peak_mb": round(dirty_peak / MB, 1),
        },
        "loop_block_ratio": round(forked_lag_ms / max(1, in_process_lag_ms), 4),
        "same_bytes": True,
    }


def _grow(state: core.LedgerState, account_ids: list[str], from_bet: int, to_bet: int) -> None:
    decide, apply = core.decide, core.apply
    for n in range(from_bet, to_bet):
        outcome = decide(state, bet_command(n, account_ids), 2_000 + n // 1000)
        assert isinstance(outcome, core.Accepted), outcome
        for event in outcome.events:
            apply(state, event)


def run(sizes: list[int], accounts: int) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    state, account_ids = setup_state(accounts)
    results = []
    placed = 0
    for size in sorted(sizes):
        log(f"placing bets {placed:,} to {size:,}")
        _grow(state, account_ids, placed, size)
        placed = size
        replay = ReplayState(state, placed, f"1:{placed}", verifier=None)
        log(f"measuring at {size:,} bets")
        results.append(eventloop.run(_measure(replay)))
    return {
        "benchmark": "snapshot.loop_block",
        "accounts": accounts,
        "sizes": results,
        "machine": machine_info(load_at_start),
        "command": command_line(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bets",
        type=positive_ints,
        default=[200_000, 500_000],
        help="state sizes in open bets, comma-separated (default 200000,500000)",
    )
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    result = run(args.bets, args.accounts)
    if not args.json:
        for size in result["sizes"]:
            before, after = size["in_process"], size["forked"]
            print(
                f"{size['bets']:,} bets: loop held {before['loop_lag_ms']} ms in process, "
                f"{after['loop_lag_ms']} ms forked (fork {after['fork_ms']} ms, "
                f"child {after['child_ms']} ms, {after['child_private_dirty_peak_mb']} MB)"
            )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
