"""`ironbook demo`: the big race day, on a real cluster, under fire.

Starts a real local cluster in a temporary directory (3 nats-server nodes
with JetStream R3 and fsync on every write; 2 ledger partitions x 3 replica
processes; the simulated odds feed), opens accounts and a race meeting, and runs the day: a steady
phase of betting, then a surge onto the big race with a countdown to the
off. At the peak, faults are injected one after another: kill -9 of a
ledger leader, kill -9 of the NATS node leading a partition's stream, and a
partitioned node (or, where the fault injector has no network partition, a
leader frozen by SIGSTOP past its lease). At the off the big race is closed
and settled, everything is healed, and the history checker judges every
client operation against every partition's log and every replica:
nothing acknowledged lost, nothing duplicated, money conserved, replicas
identical.

A live dashboard shows the nodes, the leader of each partition, bets/s,
p50/p99 latency, timeouts and the faults as they happen (a plain line a
second when stdout is not a terminal, or with --no-dashboard). The verdict
is printed at the end, and report.md, report.json and report.png (bets/s
and p99 latency over time with the faults marked) are written to --out.

A failing day (or one that crashed) writes failure.md into its data
directory and copies the evidence (history, logs, fault timeline, JSON) to
./chaos-failures/<seed>-<UTC time>/ (--keep DIR). The machine is surveyed
for leftovers of earlier runs first (reported as `environment` in
report.json); --strict-env refuses to start on any.

Exit status: 0 when the checker passes, 1 when it fails, 2 on bad usage or a
refused start.
`ironbook demo --walkthrough` runs the older in-process tour of the ledger
core instead (no cluster, a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from ironbook.chaos.environment import UncleanEnvironment
from ironbook.chaos.evidence import DEFAULT_KEEP_ROOT
from ironbook.demo.dashboard import plain_line, render
from ironbook.demo.raceday import (
    DEFAULT_FAULTS,
    QUICK_FAULTS,
    LiveState,
    RaceDayOptions,
    RaceDayResult,
    run_race_day,
)
from ironbook.demo.report import verdict_lines, write_report
from ironbook.demo.walkthrough import run_demo
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.monitoring import BINARIES, MonitoringUnavailable, binary
from ironbook.settings import MonitoringSettings

DEFAULT_SECONDS = 90.0
QUICK_SECONDS = 36.0
MIN_SECONDS = 20.0
MAX_PARTITIONS = 4
DASHBOARD_REFRESH_S = 0.5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the big race day: a real cluster under a surge of bets, faults at the peak, "
        "a live dashboard, the checker's verdict and a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short day (~{QUICK_SECONDS:.0f} s of traffic, two faults; about a minute in all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"seconds of traffic, steady phase plus surge (default {DEFAULT_SECONDS:.0f}, "
        f"{QUICK_SECONDS:.0f} with --quick; at least {MIN_SECONDS:.0f}). The off waits for "
        "a fault in progress to heal.",
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed for clients and faults (default 2026)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-report"),
        help="directory for report.md, report.json and report.png (default ./demo-report)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="a fresh directory for the cluster and history.jsonl, kept afterwards "
        "(default: a temporary directory, removed after a passing run)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=2,
        help=f"ledger partitions, each with 3 replicas (default 2, at most {MAX_PARTITIONS})",
    )
    parser.add_argument(
        "--no-feed",
        action="store_true",
        help="run without the simulated odds feed (provider, ingester, settlement)",
    )
    parser.add_argument(
        "--no-monitoring",
        action="store_true",
        help="run without Prometheus, Alertmanager and the ops console (on by default when "
        "the Debian packages are installed; their alerts go in the report)",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="print a plain status line each second instead of the live dashboard",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=DEFAULT_KEEP_ROOT,
        metavar="DIR",
        help="a failing day copies its evidence to DIR/<seed>-<UTC time>/ "
        f"(default ./{DEFAULT_KEEP_ROOT})",
    )
    parser.add_argument(
        "--strict-env",
        action="store_true",
        help="refuse to start if leftovers of earlier runs are found (processes, network "
        "namespaces, locked ports, a busy CPU)",
    )
    parser.add_argument(
        "--walkthrough",
        action="store_true",
        help="run the in-process tour of the ledger core instead (no cluster)",
    )
    parser.set_defaults(func=run)


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _monitoring() -> MonitoringSettings | None:
    """The monitoring stack, when its Debian packages are installed."""
    try:
        for name in BINARIES:
            binary(name)
    except MonitoringUnavailable as why:
        print(f"no monitoring: {why}", flush=True)
        return None
    return MonitoringSettings(enabled=True)


def run(args: argparse.Namespace) -> int:
    if args.walkthrough:
        return 0 if run_demo(args.seed) else 1
    seconds = args.seconds
    if seconds is None:
        seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if seconds < MIN_SECONDS:
        return _usage_error(f"--seconds must be at least {MIN_SECONDS:.0f}")
    if not 1 <= args.partitions <= MAX_PARTITIONS:
        return _usage_error(f"--partitions must be between 1 and {MAX_PARTITIONS}")
    if args.out.exists() and not args.out.is_dir():
        return _usage_error(f"--out {args.out} exists and is not a directory")
    temporary = args.data_dir is None
    if not temporary and (args.data_dir / "history.jsonl").exists():
        return _usage_error(f"{args.data_dir} holds an earlier run: --data-dir must be fresh")
    data_dir = Path(tempfile.mkdtemp(prefix="ironbook-demo-")) if temporary else args.data_dir
    options = RaceDayOptions(
        data_dir=data_dir,
        seconds=seconds,
        seed=args.seed,
        partitions=args.partitions,
        faults=QUICK_FAULTS if args.quick else DEFAULT_FAULTS,
        peak_clients=48 if args.quick else 64,
        feed=None if args.no_feed else FeedOptions(seed=args.seed),
        command=_repeat_command(args, seconds),
        keep_dir=args.keep,
        strict_env=args.strict_env,
        monitoring=None if args.no_monitoring else _monitoring(),
    )
    console = Console()
    dashboard = console.is_terminal and not args.no_dashboard
    live = LiveState(seed=args.seed, partitions=args.partitions)
    print(
        f"ironbook race day: seed {args.seed}, {seconds:.0f} s of traffic, "
        f"{args.partitions} partition(s); cluster in {data_dir}",
        flush=True,
    )
    try:
        result = asyncio.run(_run(options, live, console, dashboard))
    except UncleanEnvironment as error:
        return _usage_error(f"--strict-env: leftovers of earlier runs on this machine: {error}")
    except FileExistsError as error:
        return _usage_error(str(error))
    if temporary and result.verdict == "pass":
        result.history = ""
        result.data_dir = ""
    _print_verdict(console, result)
    try:
        files = write_report(result, args.out)
    except OSError as error:
        print(f"error: could not write the report to {args.out}: {error}", file=sys.stderr)
        return 1
    for path in (files.markdown, files.json, files.chart):
        print(f"wrote {path}")
    if temporary and result.verdict == "pass":
        shutil.rmtree(data_dir, ignore_errors=True)
    elif temporary:
        print(f"kept {data_dir} for inspection", file=sys.stderr)
    return 0 if result.verdict == "pass" else 1


async def _run(
    options: RaceDayOptions, live: LiveState, console: Console, dashboard: bool
) -> RaceDayResult:
    try:
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(run_race_day(options, live))
            await _show(runner, live, console, dashboard)
    except* (UncleanEnvironment, FileExistsError) as refused:
        raise refused.exceptions[0] from None
    return runner.result()


async def _show(
    runner: asyncio.Task[RaceDayResult], live: LiveState, console: Console, dashboard: bool
) -> None:
    """The dashboard (or a plain line a second) until `runner` is done."""
    if dashboard:
        with Live(render(live), console=console, auto_refresh=False) as screen:
            while not runner.done():
                await asyncio.wait({runner}, timeout=DASHBOARD_REFRESH_S)
                screen.update(render(live), refresh=True)
    else:
        printed_faults = 0
        printed_phase = ""
        next_line = time.monotonic()
        while not runner.done():
            await asyncio.wait({runner}, timeout=max(0.0, next_line - time.monotonic()))
            for line in live.fault_lines[printed_faults:]:
                print(f"  >> {line.strip()}", flush=True)
            printed_faults = len(live.fault_lines)
            if runner.done():
                break
            if live.traffic:
                print(plain_line(live), flush=True)
            elif live.phase != printed_phase:
                print(f"-- {live.phase}", flush=True)
            printed_phase = live.phase
            next_line += 1.0


_BIG_LETTERS = {
    "P": ("█████ ", "█   █ ", "█████ ", "█     ", "█     "),
    "A": (" ███  ", "█   █ ", "█████ ", "█   █ ", "█   █ "),
    "S": (" ████ ", "█     ", " ███  ", "    █ ", "████  "),
    "F": ("█████ ", "█     ", "████  ", "█     ", "█     "),
    "I": ("███ ", " █  ", " █  ", " █  ", "███ "),
    "L": ("█     ", "█     ", "█     ", "█     ", "█████ "),
}


def big_word(word: str) -> str:
    """`word` in five-row block letters (P, A, S, F, I, L)."""
    rows = ["".join(_BIG_LETTERS[letter][row] for letter in word) for row in range(5)]
    return "\n".join(row.rstrip() for row in rows)


def _print_verdict(console: Console, result: RaceDayResult) -> None:
    passed = result.verdict == "pass"
    headline, *details = verdict_lines(result)
    colour = "green" if passed else "red"
    body = Text()
    body.append(big_word("PASS" if passed else "FAIL") + "\n\n", style=f"bold {colour}")
    body.append(
        "every acknowledged operation is in the ledger exactly once, nothing refused left "
        "a trace, money is conserved and the replicas are identical\n"
        if passed
        else "the checker found violations, or the cluster did not heal (below)\n",
        style=f"bold {colour}",
    )
    for line in details:
        body.append(line + "\n")
    for error in result.errors:
        body.append(f"error: {error}\n", style="red")
    for violation in result.check.violations[:5] if result.check is not None else []:
        body.append(f"{violation}\n", style="red")
    if result.evidence_dir:
        body.append(f"evidence kept in {result.evidence_dir} (see failure.md)\n", style="red")
    console.print(
        Panel(
            body,
            title=Text(f"  {headline}  ", style=f"bold reverse {colour}"),
            border_style=colour,
            expand=True,
        )
    )


def _repeat_command(args: argparse.Namespace, seconds: float) -> str:
    parts = ["ironbook demo", f"--seed {args.seed}", f"--seconds {seconds:g}"]
    if args.quick:
        parts.insert(1, "--quick")
    if args.partitions != 2:
        parts.append(f"--partitions {args.partitions}")
    if args.no_feed:
        parts.append("--no-feed")
    if args.no_monitoring:
        parts.append("--no-monitoring")
    return " ".join(parts)
