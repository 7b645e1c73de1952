"""`ironbook chaos`: prove the ledger under real faults.

Runs a real local cluster (3 nats-server nodes, 3 replicas) under a bet /
deposit / withdraw / read / settle workload with a few hot accounts, and
injects faults on a seeded schedule, each healed before the next:

  leader_kill         kill -9 of the ledger leader replica (restarted later)
  follower_kill       kill -9 of a follower replica
  nats_leader_kill    kill -9 of the nats-server leading the ledger stream
  nats_follower_kill  kill -9 of another nats-server
  leader_pause        SIGSTOP of the leader past its lease, then SIGCONT
  nats_leader_pause   SIGSTOP of the stream-leading nats-server past an election
  partition           one node (its nats-server and replicas) cut off for 2-6 s
  latency             one node's link slowed for 2-6 s (tc netem delay 50ms 10ms,
                      or a tbf rate limit where the kernel has no sch_netem)
  gateway_kill        kill -9 of an HTTP gateway worker (restarted 1-3 s later);
                      asking for it starts 2 gateway workers, and 2 more clients
                      (--http-clients) send bets, deposits and withdrawals over
                      HTTP with an Idempotency-Key, retried on the other worker

partition and latency run each node in its own network namespace (veth pairs
on one bridge, names starting with `ibk`), which needs root and iproute2;
elsewhere they are skipped with the reason and the other kinds run. The
namespaces are removed at the end, also on failure or Ctrl-C;
`ironbook chaos --cleanup-network` removes what a killed run left behind.
Fault names may use - or _ (leader-kill = leader_kill).

At the end everything is restarted and healed, the replicas converge, and the
history checker judges every recorded client operation against the log (see
docs/chaos.md). Exit status 0 on a passing verdict, 1 on a failing one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import get_args

import msgspec

from ironbook.adapters.netns import cleanup_leftovers, unavailable_reason
from ironbook.chaos.faults import ALL_FAULTS, FaultKind
from ironbook.chaos.run import MUTATION_ENV, ChaosOptions, ChaosReport, run_chaos


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="run a local cluster under a workload and seeded faults, then check the history",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds of workload (default 120)"
    )
    parser.add_argument("--seed", type=int, default=1, help="fault schedule seed (default 1)")
    parser.add_argument(
        "--faults",
        default=",".join(ALL_FAULTS),
        help=f"comma-separated fault kinds (default all: {','.join(ALL_FAULTS)})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="a fresh directory for the cluster and history.jsonl (default: a temp dir, "
        "removed after a passing run)",
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent NATS clients (default 16)"
    )
    parser.add_argument(
        "--http-clients",
        type=int,
        default=2,
        help="concurrent HTTP clients when gateway_kill is asked for (default 2)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--cleanup-network",
        action="store_true",
        help="remove network namespaces, veths and bridges left by chaos runs whose "
        "process died, then exit",
    )
    parser.add_argument("--test-mutation", default="", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def parse_faults(text: str) -> list[FaultKind]:
    kinds: list[FaultKind] = []
    known = get_args(FaultKind)
    for name in filter(None, (part.strip().replace("-", "_") for part in text.split(","))):
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
        kinds.append(name)  # type: ignore[arg-type]
    if not kinds:
        raise ValueError("--faults names no fault")
    return kinds


def run(args: argparse.Namespace) -> int:
    if args.cleanup_network:
        return cleanup_network()
    try:
        faults = parse_faults(args.faults)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.duration < 30:
        print("error: --duration must be at least 30 s", file=sys.stderr)
        return 2
    if args.clients < 1 or args.http_clients < 0:
        print("error: --clients must be at least 1, --http-clients at least 0", file=sys.stderr)
        return 2
    if args.test_mutation:
        os.environ[MUTATION_ENV] = args.test_mutation
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="ironbook-chaos-")) if temporary else args.data_dir

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    options = ChaosOptions(
        data_dir=data_dir,
        duration_s=args.duration,
        seed=args.seed,
        faults=faults,
        clients=args.clients,
        http_clients=args.http_clients,
    )
    # SIGTERM unwinds like Ctrl-C, so the cluster stops and the namespaces go.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = asyncio.run(run_chaos(options, say))
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render(report))
    if temporary and report.verdict == "pass":
        shutil.rmtree(data_dir, ignore_errors=True)
    elif temporary:
        print(f"kept {data_dir} for inspection", file=sys.stderr)
    return 0 if report.verdict == "pass" else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cleanup_network() -> int:
    reason = unavailable_reason()
    if reason is not None:
        print(f"nothing to clean up: {reason}")
        return 0
    removed = cleanup_leftovers()
    print(f"removed {len(removed)}: {' '.join(removed)}" if removed else "nothing left behind")
    return 0


def render(report: ChaosReport) -> str:
    faults = ", ".join(f"{kind} x{count}" for kind, count in report.faults.items()) or "none"
    lines = [
        f"verdict: {report.verdict.upper()}",
        f"operations: {report.ops} ({report.ok} ok, {report.fail} refused, {report.info} unknown "
        f"-> {report.info_applied} applied / {report.info_absent} absent, {report.reads} reads)",
        f"faults: {faults}",
        f"lost: {report.lost}  duplicated: {report.duplicated}  conserved: {report.conserved}  "
        f"no negative balance: {report.no_negative_balance}",
        f"replicas agree: {report.replicas_agree}  reads consistent: {report.reads_consistent}  "
        f"log entries: {report.log_entries}",
        f"history: {report.history}",
    ]
    if report.projection_agrees is not None:
        lines.append(
            f"history projection equals a fold of the log: {report.projection_agrees}  "
            f"operations over HTTP: {report.http_ops}"
        )
    lines.extend(f"skipped {kind}: {why}" for kind, why in report.skipped.items())
    if report.network:
        lines.append(f"network: {report.network}")
    lines.extend(f"error: {error}" for error in report.errors)
    for violation in report.violations:
        lines.append(f"  {violation.get('kind')}: {violation.get('detail')}")
    return "\n".join(lines)
