"""`ironbook bench dr-lag --data-dir D [--seconds 60] [--promote]`: DR mirror lag
under load, and optionally the promotion's time.

Against a running `ironbook up --dr-site --data-dir D`, runs the chaos
workload (bets, deposits, withdrawals, settlements; `ironbook.chaos.workload`)
on the primary site for `--seconds` while sampling `ironbook dr status` every
half second, and prints one JSON object: the operations accepted, the links'
round-trip times, and per mirrored stream JetStream's lag (entries) and
silence (seconds) and the sequence gap (site A's last sequence minus site B's,
read at about the same moment), each as max and median (docs/dr.md).
With `--promote`, then asks the running `up` to promote site B (its control
socket, as `ironbook dr promote --site b` does) and adds `promote_s` (the
promotion, as `up` timed it) and `first_deposit_s` (from asking until a
deposit is accepted by site B).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ironbook.chaos.workload import Workload
from ironbook.cli.dr import gather
from ironbook.client import ClientConfig, connect_ledger, open_funded_account
from ironbook.core import acting
from ironbook.services.control import ControlRequest, request
from ironbook.services.local_cluster import read_runtime
from ironbook.settings import load_settings

SAMPLE_EVERY_S = 0.5


async def _measure(data_dir: Path, seconds: float) -> dict[str, Any]:
    runtime = read_runtime(data_dir)
    if runtime is None:
        raise SystemExit(f"no `ironbook up --dr-site` runs from {data_dir}")
    settings = load_settings(None, {"cluster": {"data_dir": data_dir}})
    client = await connect_ledger(
        runtime.endpoint(),
        partitions=runtime.partitions,
        config=ClientConfig(deadline_ms=30_000),
        issuer=acting("bench-dr"),
    )
    samples: dict[str, list[tuple[int, float | None, int]]] = {}
    rtts: list[float] = []
    stop_at = time.monotonic() + seconds
    workload = Workload(client)
    try:
        await workload.setup()

        async def sample() -> None:
            while time.monotonic() < stop_at:
                view = await asyncio.to_thread(gather, settings)
                rtts.extend(view["link_rtt_ms"])
                for row in view["streams"]:
                    if row["lag_entries"] is None or row["origin_last_seq"] is None:
                        continue
                    gap = row["origin_last_seq"] - row["mirror_last_seq"]
                    samples.setdefault(row["stream"], []).append(
                        (row["lag_entries"], row["active_s"], gap)
                    )
                await asyncio.sleep(SAMPLE_EVERY_S)

        async with asyncio.TaskGroup() as group:
            group.create_task(workload.run(stop_at - time.monotonic()))
            group.create_task(sample())
    finally:
        await client.close()

    def spread(values: list[float]) -> dict[str, float]:
        return {"max": max(values), "median": statistics.median(values)} if values else {}

    return {
        "seconds": seconds,
        "ops_accepted": workload.accepted,
        "client_gave_up": len(workload.gave_up),
        "link_rtt_ms": spread(rtts),
        "streams": {
            stream: {
                "samples": len(rows),
                "lag_entries": spread([row[0] for row in rows]),
                "active_s": spread([row[1] for row in rows if row[1] is not None]),
                "seq_gap": spread([row[2] for row in rows]),
            }
            for stream, rows in samples.items()
        },
    }


async def _promote(data_dir: Path) -> dict[str, float]:
    started = time.monotonic()
    answer = await request(
        data_dir,
        ControlRequest(op="dr_promote", site="b"),
        lambda line: print(line, file=sys.stderr),
    )
    runtime = read_runtime(data_dir)
    assert runtime is not None
    client = await connect_ledger(
        runtime.endpoint(),
        partitions=runtime.partitions,
        config=ClientConfig(deadline_ms=60_000),
        issuer=acting("bench-dr"),
    )
    try:
        await open_funded_account(
            client, f"after-promotion-{time.time_ns()}", 100, "first deposit on site b"
        )
    finally:
        await client.close()
    return {
        "promote_s": answer["took_ms"] / 1000,
        "first_deposit_s": round(time.monotonic() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench dr-lag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the data dir of a running `up --dr-site`"
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="how long the workload runs (default 60)"
    )
    parser.add_argument(
        "--promote", action="store_true", help="then promote site b (irreversible: a drill)"
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    result = asyncio.run(_measure(data_dir, args.seconds))
    if args.promote:
        result |= asyncio.run(_promote(data_dir))
    print(json.dumps(result, indent=2))
    return 0
