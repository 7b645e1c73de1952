"""`ironbook bench NAME`: the benchmarks (`ironbook.benchmarks`), with JSON output."""

from __future__ import annotations

import argparse
import importlib
import sys

from ironbook.cli.signals import unwind_on_sigterm

BENCHMARKS = {
    "core": "ironbook.benchmarks.pure_core",
    "ledger": "ironbook.benchmarks.ledger",
    "log": "ironbook.benchmarks.log",
    "http": "ironbook.benchmarks.http_api",
    "odds": "ironbook.benchmarks.odds",
    "feed-cpu": "ironbook.benchmarks.feed_cpu",
    "pg-baseline": "ironbook.benchmarks.pg_baseline",
    "audit": "ironbook.benchmarks.audit",
    "receipts": "ironbook.benchmarks.receipts",
    "settle": "ironbook.benchmarks.settle",
    "backup": "ironbook.benchmarks.backup",
    "restore": "ironbook.benchmarks.restore",
    "revocation": "ironbook.benchmarks.revocation",
    "detect": "ironbook.benchmarks.detect",
    "snapshot": "ironbook.benchmarks.snapshot",
    "dr-lag": "ironbook.benchmarks.dr_lag",
    "dr-modes": "ironbook.benchmarks.dr_modes",
}


def _command(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(BENCHMARKS[args.benchmark])
    except ModuleNotFoundError as err:
        print(
            f"error: the {args.benchmark} benchmark needs {err.name!r}: "
            "install the bench extra (pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return 2
    # SIGTERM unwinds like Ctrl-C: a benchmark's cluster, relays and mounts go.
    unwind_on_sigterm()
    return int(module.main(args.rest))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark (core: decide + apply on one core; "
        "ledger: ironbook vs PostgreSQL, and failover; "
        "log: the JetStream log alone; "
        "http: bets/s through the gateway, and a flood; "
        "odds: feed -> WebSocket latency, bets/s with the feed on; "
        "feed-cpu: what the feed costs the cluster in CPU; "
        "pg-baseline: PostgreSQL alone; "
        "audit: audit verify speed on synthetic entries; "
        "receipts: how soon after acceptance a bet's receipt is available; "
        "settle: one big market settled under background bets; "
        "backup: backup, verify and restore time and size at N bets; "
        "restore: snapshot size and replica restore time at N bets of synthesised history; "
        "revocation: how long a token revocation takes to reach every gateway worker; "
        "detect: seeded gradual faults judged by the watcher and the threshold rules; "
        "snapshot: a replica's event-loop block per snapshot, in process and forked; "
        "dr-lag: a running DR pair's mirror lag under the chaos workload, and its promotion; "
        "dr-modes: bets/s and latency of a stretch cluster beside mirror mode at one WAN RTT)",
        description=__doc__,
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument(
        "rest", nargs=argparse.REMAINDER, help="the benchmark's own options (see its --help)"
    )
    parser.set_defaults(func=_command)
