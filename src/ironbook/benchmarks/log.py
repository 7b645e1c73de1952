"""Measure the JetStream `Log` adapter on a fresh local 3-node cluster.

    ironbook bench log --json

- append: one writer, `--in-flight` pipelined appends, each a batch of
  `--events-per-batch` events of `--event-bytes`, each with the expected
  sequence and a batch id (exactly what a sequencer does).
- tail: a follower reading the log with `read()` while the writer runs; its
  lag when the writer stops and the time it needs to catch up.
- catch_up: a fresh reader reading the whole log from seq 1.
- failover (with `--failover`): kill -9 of the stream leader's server while
  appending; the time until the next append is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from ironbook.adapters.nats.log import NatsLog, stream_name
from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.benchmarks.common import machine_info
from ironbook.benchmarks.stats import percentile_ms
from ironbook.replication.interfaces import AppendUnknown, LogUnavailable

_RETRY_DEADLINE_S = 60.0


async def _append_retrying(ledger: NatsLog, payload: bytes, seq: int, batch_id: str) -> int:
    deadline = time.monotonic() + _RETRY_DEADLINE_S
    while True:
        try:
            return await ledger.append(payload, expected_last_seq=seq - 1, batch_id=batch_id)
        except (AppendUnknown, LogUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def _write(
    ledger: NatsLog, *, batches: int, in_flight: int, payload: bytes, first_seq: int
) -> list[float]:
    latencies_ms: list[float] = []
    window: deque[asyncio.Task[int]] = deque()

    async def one(seq: int) -> int:
        started = time.perf_counter()
        landed = await ledger.append(payload, expected_last_seq=seq - 1, batch_id=f"bench-{seq}")
        latencies_ms.append((time.perf_counter() - started) * 1000)
        return landed

    async with asyncio.TaskGroup() as group:
        for seq in range(first_seq, first_seq + batches):
            window.append(group.create_task(one(seq)))
            if len(window) >= in_flight:
                assert await window.popleft() == seq - in_flight + 1
    return latencies_ms


async def _tail(ledger: NatsLog, stop: asyncio.Event, max_entries: int) -> tuple[int, float]:
    """Follow the log until `stop` and caught up; (entries read, seconds from
    `stop` to caught up)."""
    next_seq = 1
    stopped_at: float | None = None
    while True:
        entries = await ledger.read(next_seq, max_entries=max_entries, wait_ms=100)
        if entries:
            next_seq = entries[-1].seq + 1
        if stop.is_set():
            stopped_at = stopped_at or time.monotonic()
            if next_seq > await ledger.last_seq():
                return next_seq - 1, time.monotonic() - stopped_at


async def measure(cluster: LocalNatsCluster, args: argparse.Namespace) -> dict[str, object]:
    writer_nc = await connect_nats(cluster.url, name="bench-writer")
    reader_nc = await connect_nats(cluster.url, name="bench-reader")
    try:
        writer = await NatsLog.open(writer_nc, 0)
        reader = NatsLog(reader_nc, 0)
        payload = b"e" * (args.event_bytes * args.events_per_batch)

        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            tail = group.create_task(_tail(reader, stop, args.read_max_entries))
            started = time.perf_counter()
            latencies_ms = await _write(
                writer, batches=args.batches, in_flight=args.in_flight, payload=payload, first_seq=1
            )
            elapsed_s = time.perf_counter() - started
            stop.set()
        tailed, tail_lag_s = tail.result()

        started = time.perf_counter()
        fresh = NatsLog(reader_nc, 0)
        next_seq, read_entries = 1, 0
        while True:
            entries = await fresh.read(next_seq, max_entries=args.read_max_entries, wait_ms=0)
            if not entries:
                break
            read_entries += len(entries)
            next_seq = entries[-1].seq + 1
        read_s = time.perf_counter() - started

        result: dict[str, object] = {
            "append": {
                "batches": args.batches,
                "events_per_batch": args.events_per_batch,
                "event_bytes": args.event_bytes,
                "in_flight": args.in_flight,
                "batches_per_s": round(args.batches / elapsed_s, 1),
                "events_per_s": round(args.batches * args.events_per_batch / elapsed_s, 1),
                "p50_ms": percentile_ms(latencies_ms, 0.5),
                "p99_ms": percentile_ms(latencies_ms, 0.99),
            },
            "tail": {"entries": tailed, "caught_up_after_writer_stopped_s": round(tail_lag_s, 3)},
            "catch_up": {
                "entries": read_entries,
                "entries_per_s": round(read_entries / read_s, 1),
                "events_per_s": round(read_entries * args.events_per_batch / read_s, 1),
            },
        }
        if args.failover:
            result["failover"] = await _failover(cluster, writer, payload, args.batches + 1)
        return result
    finally:
        await writer_nc.close()
        await reader_nc.close()


async def _failover(
    cluster: LocalNatsCluster, ledger: NatsLog, payload: bytes, first_seq: int
) -> dict[str, object]:
    stream = stream_name(0)
    leader = await asyncio.to_thread(cluster.wait_stream_leader, stream)
    seq = first_seq
    for _ in range(20):
        await _append_retrying(ledger, payload, seq, f"bench-{seq}")
        seq += 1
    killed_at = time.monotonic()
    cluster.kill_node(leader)
    await _append_retrying(ledger, payload, seq, f"bench-{seq}")
    gap_s = time.monotonic() - killed_at
    new_leader = await asyncio.to_thread(cluster.wait_stream_leader, stream, not_on=leader)
    await asyncio.to_thread(cluster.start_node, leader)
    return {"killed": leader, "new_leader": new_leader, "append_gap_s": round(gap_s, 3)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ironbook bench log", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--events-per-batch", type=int, default=100)
    parser.add_argument("--event-bytes", type=int, default=104)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--read-max-entries", type=int, default=256)
    parser.add_argument("--failover", action="store_true")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    load_at_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="ironbook-logbench-") as data_dir,
        LocalNatsCluster(Path(data_dir)) as cluster,
    ):
        cluster.start()
        result = asyncio.run(measure(cluster, args))
    result["machine"] = machine_info(load_at_start)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
