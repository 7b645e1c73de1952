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
docs/chaos.md). A workload client that raises fails the run, the error named.

Before the start the machine is surveyed for leftovers of earlier runs
(nats-server and ironbook processes, network namespaces, locked ports, a busy
CPU): they are printed and reported as `environment`; --strict-env refuses
to start on any. A failing run writes failure.md into its data directory
(each violation with its request ids, log positions, the faults around it
and the process log lines about it, and the command that reruns the seed)
and copies the evidence to ./chaos-failures/<seed>-<UTC time>/ (--keep DIR).

--soak N runs seeds S, S+1, ... (S from --seed) back to back on fresh
clusters, appends one JSON line per run to --results (default
./chaos-soak.jsonl), prints a summary table and stops at the first failure;
--resume continues an interrupted soak from its results file.

Exit status 0 on a passing verdict (every run of a soak), 1 on a failing
one, 2 on bad usage or a refused start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import msgspec

from ironbook.adapters.netns import cleanup_leftovers, unavailable_reason
from ironbook.chaos.audit import audit_line
from ironbook.chaos.environment import UncleanEnvironment
from ironbook.chaos.evidence import DEFAULT_KEEP_ROOT
from ironbook.chaos.faults import ALL_FAULTS, FaultKind
from ironbook.chaos.run import ChaosOptions, ChaosReport, run_chaos
from ironbook.chaos.soak import DEFAULT_RESULTS, SoakError, SoakOptions, run_soak, summary_table
from ironbook.cli.check import report_lines
from ironbook.cli.signals import unwind_on_sigterm
from ironbook.settings import ReplicaMutation


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
        help=f"comma-separated fault kinds (default all: {','.join(ALL_FAULTS)}), or none "
        "(a calm run: with --monitoring, any alert is a false one)",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="run Prometheus, Alertmanager and the alert receiver with the cluster and report, "
        "per fault kind, which injections an alert detected and how fast it fired and resolved",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="a fresh directory for the cluster and history.jsonl (default: a temp dir, "
        "removed after a passing run); with --soak, each run's goes in DIR/seed-<S>",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=DEFAULT_KEEP_ROOT,
        metavar="DIR",
        help="a failing run copies its evidence to DIR/<seed>-<UTC time>/ "
        f"(default ./{DEFAULT_KEEP_ROOT})",
    )
    parser.add_argument(
        "--strict-env",
        action="store_true",
        help="refuse to start if leftovers of earlier runs are found (processes, network "
        "namespaces, locked ports, a busy CPU)",
    )
    parser.add_argument(
        "--soak",
        type=int,
        default=None,
        metavar="N",
        help="run N seeds back to back (from --seed), stopping at the first failure",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help=f"the soak's results file, one JSON line per run (default ./{DEFAULT_RESULTS})",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the soak recorded in --results (its seeds are not run again)",
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
    parser.add_argument(
        "--test-mutation",
        default="none",
        choices=get_args(ReplicaMutation),
        help=argparse.SUPPRESS,
    )
    parser.set_defaults(func=run)


def parse_faults(text: str) -> list[FaultKind]:
    if text.strip() == "none":
        return []
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
    problem = _usage_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    data_dir = args.data_dir
    if temporary and args.soak is None:
        data_dir = Path(tempfile.mkdtemp(prefix="ironbook-chaos-"))

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    options = ChaosOptions(
        data_dir=data_dir or Path(),
        duration_s=args.duration,
        seed=args.seed,
        faults=faults,
        clients=args.clients,
        http_clients=args.http_clients,
        keep_dir=args.keep,
        strict_env=args.strict_env,
        test_mutation=args.test_mutation,
        monitoring=args.monitoring,
    )
    # SIGTERM unwinds like Ctrl-C, so the cluster stops and the namespaces go.
    unwind_on_sigterm()
    if args.soak is not None:
        return soak(args, options, say)
    try:
        report = asyncio.run(run_chaos(options, say))
    except (FileExistsError, UncleanEnvironment) as error:
        print(f"error: {_refusal(error)}", file=sys.stderr)
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


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.duration < 30:
        return "--duration must be at least 30 s"
    if args.clients < 1 or args.http_clients < 0:
        return "--clients must be at least 1, --http-clients at least 0"
    if args.soak is not None and args.soak < 1:
        return "--soak must be at least 1"
    if args.resume and args.soak is None:
        return "--resume continues a --soak"
    return None


def soak(args: argparse.Namespace, options: ChaosOptions, say: Callable[[str], None]) -> int:
    soak_options = SoakOptions(
        base=options,
        runs=args.soak,
        first_seed=args.seed,
        results=args.results,
        resume=args.resume,
        data_root=args.data_dir,
    )
    try:
        lines = asyncio.run(run_soak(soak_options, say))
    except (FileExistsError, UncleanEnvironment, SoakError) as error:
        print(f"error: {_refusal(error)}", file=sys.stderr)
        return 2
    failed = sum(line.verdict != "pass" for line in lines)
    if args.json:
        summary = {
            "verdict": "fail" if failed else "pass",
            "runs": [msgspec.to_builtins(line) for line in lines],
            "failed": failed,
            "results": str(args.results),
        }
        print(msgspec.json.encode(summary).decode())
    else:
        print(summary_table(lines))
    return 1 if failed else 0


def _refusal(error: Exception) -> str:
    if isinstance(error, UncleanEnvironment):
        return f"--strict-env: leftovers of earlier runs on this machine: {error}"
    return str(error)


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
    lines = [f"verdict: {report.verdict.upper()}", f"faults: {faults}"]
    if report.write_gap_ms:
        gaps = ", ".join(
            f"{kind} max {gap.max} median {gap.median}" for kind, gap in report.write_gap_ms.items()
        )
        lines.append(f"write gap ms: {gaps}")
    if report.check is not None:
        lines.extend(report_lines(report.check))
    if report.audit is not None:
        lines.append(audit_line(report.audit))
    lines.append(f"history: {report.history}")
    if report.http_ops:
        lines.append(f"operations over HTTP: {report.http_ops}")
    lines.extend(f"skipped {kind}: {why}" for kind, why in report.skipped.items())
    if report.network:
        lines.append(f"network: {report.network}")
    lines.extend(f"environment: {line}" for line in report.environment.leftovers)
    lines.extend(f"error: {error}" for error in report.errors)
    if report.evidence_dir is not None:
        lines.append(f"evidence: {report.evidence_dir} (failure.md explains the failure)")
        lines.append(f"rerun: {report.command}")
    return "\n".join(lines)
