"""What the odds feed costs the cluster, in CPU: a fresh local cluster (3
nats-server nodes, R3, fsync always; 3 replicas of 1 partition; no gateway)
runs first with no feed, then with the simulated feed at each `--rates`
value; after `--warmup-seconds` the CPU time of every process is sampled
over `--seconds` (`/proc/<pid>/stat`, utime + stime) and reported as cores
per group: nats, replicas, feed (simulator, ingester, settlement).

    python bench/feed_cpu.py [--json] [--rates 1000,5000] [--seconds 20]
    ironbook bench feed-cpu [--json] ...            (the same)

`feed_above_idle_cores` is a rate's total minus the no-feed total: what the
feed takes from everything else (bets) on this machine. The ingester's own
log line (rounds/s, conflation) is copied into the result. Every
configuration runs on its own fresh cluster in a temp dir, one after the
other; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ironbook.adapters import eventloop
from ironbook.benchmarks.common import command_line, log, machine_info, positive_ints
from ironbook.benchmarks.cpu import CpuMeter, cluster_groups
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.local_cluster import LocalCluster

GROUPS = ("nats", "replicas", "feed")


def _ingester_stats(logs_dir: Path) -> str | None:
    """The ingester's last periodic stats line, if any."""
    path = logs_dir / "feed-ingest.log"
    try:
        lines = [line for line in path.read_text().splitlines() if " rounds " in line]
    except OSError:
        return None
    return lines[-1].split(" INFO ", 1)[-1] if lines else None


def measure(rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """Cores used per group by a fresh cluster with the feed at `rate` (0: none)."""
    feed = FeedOptions(rate=rate, seed=args.seed) if rate else None
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-feed-cpu-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", partitions=1, feed=feed)
        try:
            cluster.start()
            eventloop.run(cluster.wait_leaders(timeout_ms=120_000))
            log(
                f"feed {rate}/s: {args.warmup_seconds:.0f} s warm-up, "
                f"then {args.seconds:.0f} s measured ..."
            )
            time.sleep(args.warmup_seconds)
            meter = CpuMeter(
                {**cluster_groups(cluster), "feed": [p.pid for p in cluster.feeds.values()]}
            )
            meter.start()
            time.sleep(args.seconds)
            used = meter.stop()
            stats = _ingester_stats(cluster.data_dir / "logs")
        finally:
            cluster.stop()
    cores = {group: round(used[f"{group}_cpu_s"] / used["wall_s"], 3) for group in GROUPS}
    return {
        "feed_rate_per_s": rate,
        "cores": cores,
        "total_cores": round(sum(cores.values()), 3),
        "machine_busy": used["machine_busy"],
        "ingester": stats,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    idle = measure(0, args)
    feeds = [measure(rate, args) for rate in args.rates]
    for result in feeds:
        result["feed_above_idle_cores"] = round(result["total_cores"] - idle["total_cores"], 3)
    return {
        "benchmark": "feed_cpu",
        "command": command_line(),
        "idle": idle,
        "feeds": feeds,
        "parameters": {
            "rates": args.rates,
            "warmup_seconds": args.warmup_seconds,
            "seconds": args.seconds,
            "seed": args.seed,
        },
        "machine": machine_info(load_at_start),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench feed-cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rates", type=positive_ints, default=[1_000], help="feed rates, changes/s (1000)"
    )
    p.add_argument("--warmup-seconds", type=float, default=20.0, help="before measuring (20)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured per configuration (20)")
    p.add_argument("--seed", type=int, default=1, help="simulated world seed (1)")
    p.add_argument("--json", action="store_true", help="print one line of JSON only")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.warmup_seconds < 0:
        p.error("--seconds must be positive and --warmup-seconds not negative")
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(json.dumps(result, indent=2))
    idle = result["idle"]
    print(f"\nno feed: {idle['total_cores']} cores {idle['cores']}")
    for feed in result["feeds"]:
        print(
            f"feed {feed['feed_rate_per_s']}/s: {feed['total_cores']} cores {feed['cores']}, "
            f"{feed['feed_above_idle_cores']} above no feed"
        )
    return 0
