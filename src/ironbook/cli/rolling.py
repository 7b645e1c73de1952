"""`ironbook rolling-restart [--what nats|replicas|gateways|all]`: restart
every process of a running `ironbook up` cluster one by one, each healthy
again before the next (an upgrade, a configuration change).

NATS servers first hand their leaderships over (as `ironbook drain` does),
those leading nothing go first; replicas restart followers first and wait
until each has caught up, the leader last (it releases its lease as it
stops); gateway workers restart one at a time while the others keep the
port; with `all`, the history projectors and the feed too.

`--rehearse` runs the same restart on a throwaway cluster under the chaos
workload instead (`ironbook chaos --faults rolling_restart,nats_leader_kill`
with this `--what`), and reports what punters would have felt: the longest
stretch without an acknowledged write during the restart
(`max_write_gap_ms`), what the history checker found (`lost`,
`duplicated`, `verdict`), and for comparison the write gap of a kill -9 of
the NATS server leading the log, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ironbook.chaos.history import read_history
from ironbook.chaos.run import ChaosOptions, run_chaos
from ironbook.chaos.write_gaps import gaps_by_step
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.services.control import ControlError, ControlRequest, request
from ironbook.services.maintenance import ROLLING_WHAT, RollingWhat

REHEARSAL_S = 30.0
"""The chaos run's duration: every fault asked for is injected once anyway."""


def _command(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    if args.rehearse:
        return _rehearse(args.what, args.seed, args.json, say)
    try:
        answer = asyncio.run(
            request(data_dir_of(args), ControlRequest(op="rolling_restart", what=args.what), say)
        )
    except ControlError as error:
        if args.json:
            print(json.dumps({"what": args.what, "error": str(error)}))
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"what": args.what, **answer}))
    else:
        print(
            f"rolling restart of {args.what}: {len(answer['done'])} steps in {answer['took_ms']} ms"
        )
    return 0


def _rehearse(what: RollingWhat, seed: int, as_json: bool, say: Callable[[str], None]) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="ironbook-rehearsal-"))
    options = ChaosOptions(
        data_dir=data_dir,
        duration_s=REHEARSAL_S,
        seed=seed,
        faults=("rolling_restart", "nats_leader_kill"),
        rolling_what=what,
    )
    report = asyncio.run(run_chaos(options, say))
    restart = report.write_gap_ms.get("rolling_restart")
    history = read_history(Path(report.history))
    step_gaps = [
        {"step": what, "write_gap_ms": gap}
        for record in report.fault_log
        if record.kind == "rolling_restart"
        for what, gap in gaps_by_step(
            record.injected_wall_ms, [(s.at_wall_ms, s.what) for s in record.steps], history
        )
    ]
    kill = report.write_gap_ms.get("nats_leader_kill")
    check = report.check
    summary = {
        "what": what,
        "verdict": report.verdict,
        "max_write_gap_ms": restart.max if restart else None,
        "lost": check.lost if check else None,
        "duplicated": check.duplicated if check else None,
        "ops": check.ops if check else 0,
        "nats_leader_kill_write_gap_ms": kill.max if kill else None,
        "steps": step_gaps,
        "errors": report.errors,
        "seed": seed,
        "evidence_dir": report.evidence_dir,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    if report.verdict == "pass":
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if report.verdict == "pass" else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rolling-restart",
        help="restart every process one by one without a write gap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    parser.add_argument("--what", choices=ROLLING_WHAT, default="all", help="default all")
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="on a throwaway cluster under the chaos workload, measured and checked",
    )
    parser.add_argument("--seed", type=int, default=1, help="the rehearsal's seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_command)
