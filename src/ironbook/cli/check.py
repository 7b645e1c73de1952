"""`ironbook check HISTORY DATA_DIR`: judge a recorded history against a
cluster's log and replicas.

HISTORY is a JSON-lines file of client operations (what `ironbook chaos`
writes as `history.jsonl`). If the cluster in DATA_DIR is running (`ironbook
up`), it is read as it is; otherwise it is started from DATA_DIR for the
check and stopped again. Every ledger partition is checked (a market command
is in every partition's log; an account's operations in its partition's). A
running cluster's gateway history projections (DATA_DIR/history/p<P>.sqlite)
are also compared with a fold of the log. Exit
status 0 on a passing verdict, 1 on a failing one. The rules are in
docs/chaos.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import msgspec

from ironbook.chaos.history import read_history
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.projection import projection_path
from ironbook.replication.checker import CheckReport
from ironbook.services.local_cluster import LocalCluster, read_runtime


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a recorded client history against a cluster's log and replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("history", type=Path, help="history file (JSON lines)")
    parser.add_argument("data_dir", type=Path, help="the cluster's data directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        operations = read_history(args.history)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data_dir: Path = args.data_dir.resolve()
    runtime = read_runtime(data_dir)
    if runtime is not None:
        replicas: dict[int, list[str]] = {}
        for replica in runtime.replicas:
            replicas.setdefault(replica.partition, []).append(replica.node_id)
        # A running cluster's projectors (if it has them) keep their projections current.
        projections = {
            partition: projection_path(data_dir, partition)
            for partition in replicas
            if projection_path(data_dir, partition).exists()
        }
        report = asyncio.run(
            check_all_partitions(
                runtime.endpoint(),
                operations,
                replicas,
                data_dir=data_dir,
                projection_dbs=projections,
            )
        )
    else:
        if not (data_dir / "nats").is_dir():
            print(f"error: {data_dir} holds no cluster", file=sys.stderr)
            return 2
        cluster = LocalCluster(data_dir)
        try:
            cluster.start(timeout_ms=120_000)
            asyncio.run(cluster.wait_leaders(timeout_ms=120_000))
            replicas = {
                partition: cluster.replica_ids(partition) for partition in range(cluster.partitions)
            }
            report = asyncio.run(
                check_all_partitions(cluster.ops, operations, replicas, data_dir=cluster.data_dir)
            )
        finally:
            cluster.stop()
    print(msgspec.json.encode(report).decode() if args.json else render(report))
    return 0 if report.verdict == "pass" else 1


def render(report: CheckReport) -> str:
    return "\n".join([f"verdict: {report.verdict.upper()}", *report_lines(report)])


def report_lines(report: CheckReport) -> list[str]:
    """The checker's counts and violations (`ironbook chaos` prints them too)."""
    lines = [
        f"operations: {report.ops} ({report.ok} ok, {report.fail} refused, {report.info} unknown "
        f"-> {report.info_applied} applied / {report.info_absent} absent, {report.reads} reads)",
        f"lost: {report.lost}  duplicated: {report.duplicated}  conserved: {report.conserved}  "
        f"no negative balance: {report.no_negative_balance}",
        f"replicas agree: {report.replicas_agree}  reads consistent: {report.reads_consistent}  "
        f"log entries: {report.log_entries} ({report.void_entries} void)",
    ]
    if report.projection_agrees is not None:
        lines.append(f"history projection equals a fold of the log: {report.projection_agrees}")
    for kind, count in sorted(report.violation_counts.items()):
        lines.append(f"{kind}: {count}")
    for violation in report.violations:
        lines.append(f"  {violation.kind} at seqs {violation.seqs}: {violation.detail}")
    return lines
