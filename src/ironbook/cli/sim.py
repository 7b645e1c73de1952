"""`ironbook sim`: run the replication protocol in the deterministic simulator.

    ironbook sim --seeds 100000 --start 0 --jobs 2 --json

Runs seeds S..S+N-1 (each one replays exactly, on any machine), prints every
failing seed with its violations, and exits 1 if any seed failed. With
`--json`, prints one object: `runs`, `violations` (how many, over all runs),
`failed_seeds`, `failures` (seed and violations of each), `seconds`,
`void_entries` (deposed leaders' entries skipped by replay),
`quarantined_entries` (foreign entries skipped by replay), `start`, `mutation`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, get_args

from ironbook.replication.sim import Mutation, SimOptions, SimResult, run_seed


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the replication protocol under seeded faults in the simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=_positive, default=1_000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--jobs", type=_positive, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each run's timeline (faults, crashes, lease grants, appends)",
    )
    parser.add_argument(
        "--mutation",
        choices=get_args(Mutation),
        default="none",
        help="run with a deliberate protocol bug, to see the checker catch it",
    )
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run_one(work: tuple[int, SimOptions]) -> SimResult:
    seed, options = work
    return run_seed(seed, options)


def _results(seeds: range, options: SimOptions, jobs: int) -> Iterator[SimResult]:
    work = [(seed, options) for seed in seeds]
    if jobs == 1:
        yield from map(_run_one, work)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(_run_one, work, chunksize=max(1, min(256, len(work) // (jobs * 8))))


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    seeds = range(args.start, args.start + args.seeds)
    failures: list[dict[str, Any]] = []
    violations = 0
    void_entries = 0
    quarantined_entries = 0
    options = SimOptions(mutation=args.mutation, trace=args.trace)
    for result in _results(seeds, options, args.jobs):
        void_entries += result.void_entries
        quarantined_entries += result.quarantined_entries
        if args.trace and not args.json:
            print(f"seed {result.seed}:")
            for line in result.trace:
                print(f"  {line}")
        if result.ok:
            continue
        violations += len(result.violations)
        failures.append(
            {
                "seed": result.seed,
                "violations": [str(v) for v in result.violations],
                "faults": list(result.faults),
                **({"trace": list(result.trace)} if args.trace else {}),
            }
        )
        if not args.json:
            print(f"seed {result.seed} FAILED ({'; '.join(result.faults)})")
            for violation in result.violations:
                print(f"  {violation}")
    seconds = round(time.perf_counter() - started, 3)
    if args.json:
        summary = {
            "runs": len(seeds),
            "violations": violations,
            "failed_seeds": [failure["seed"] for failure in failures],
            "failures": failures,
            "seconds": seconds,
            "void_entries": void_entries,
            "quarantined_entries": quarantined_entries,
            "start": args.start,
            "mutation": args.mutation,
        }
        print(json.dumps(summary))
    else:
        print(
            f"{len(seeds)} runs (seeds {seeds.start}..{seeds.stop - 1}), "
            f"{len(failures)} failed, {violations} violations, {seconds} s"
        )
    return 1 if failures else 0
