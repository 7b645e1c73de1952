"""A chaos soak: back-to-back chaos runs of seeds S, S+1, ... on fresh
clusters, one JSON line per run appended to a results file, stopping at the
first failure (its evidence kept, see `chaos.evidence`).

    lines = await run_soak(SoakOptions(base=options, runs=12, first_seed=90210,
                                       results=Path("chaos-soak.jsonl")))

`resume` continues an interrupted soak: seeds already in the results file
are not run again (a run cut short leaves no line, so it runs again). A
results file that already records a failure ends a resumed soak at once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from ironbook.chaos.run import ChaosOptions, run_chaos

DEFAULT_RESULTS = Path("chaos-soak.jsonl")


class SoakLine(msgspec.Struct, frozen=True):
    """One run of a soak, as the results file records it."""

    seed: int
    verdict: str
    ops: int
    faults: int
    """Faults injected."""
    duration_s: float
    """Wall time of the whole run (start, workload, heal, check, stop)."""
    started_utc: str
    evidence_dir: str | None = None
    errors: list[str] = msgspec.field(default_factory=list)
    leftovers: list[str] = msgspec.field(default_factory=list)
    """What the environment survey found before the start."""


class SoakError(RuntimeError):
    """The results file cannot be used as asked (exists without `resume`,
    or does not decode)."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    base: ChaosOptions
    """Every run's options; `seed` and `data_dir` are set per run."""
    runs: int
    first_seed: int
    results: Path = DEFAULT_RESULTS
    resume: bool = False
    data_root: Path | None = None
    """Each run's data directory is `data_root/seed-<S>` (kept; a run cut
    short left one, so its rerun takes `seed-<S>.2`, ...); None: a temporary
    directory, removed after a passing run."""


def read_results(path: Path) -> list[SoakLine]:
    if not path.exists():
        return []
    decoder = msgspec.json.Decoder(SoakLine)
    lines = []
    for number, text in enumerate(path.read_bytes().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            lines.append(decoder.decode(text))
        except msgspec.DecodeError as error:
            raise SoakError(f"{path}:{number}: not a soak result: {error}") from error
    return lines


async def run_soak(
    options: SoakOptions, say: Callable[[str], None] = lambda _: None
) -> list[SoakLine]:
    """Every line of the soak, the results file's earlier ones included."""
    done = read_results(options.results)
    if done and not options.resume:
        raise SoakError(
            f"{options.results} already holds {len(done)} runs: --resume continues that soak, "
            "or give another --results"
        )
    lines = list(done)
    if any(line.verdict != "pass" for line in done):
        say(f"{options.results} already records a failing run: the soak stopped there")
        return lines
    seeds_done = {line.seed for line in done}
    options.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(options.first_seed, options.first_seed + options.runs):
        if seed in seeds_done:
            say(f"seed {seed}: already in {options.results}")
            continue
        line = await _one_run(options, seed, say)
        with options.results.open("ab") as results:
            results.write(msgspec.json.encode(line) + b"\n")
        lines.append(line)
        say(f"seed {seed}: {line.verdict.upper()} ({line.ops} ops, {line.faults} faults)")
        if line.verdict != "pass":
            say(f"seed {seed} failed: evidence in {line.evidence_dir}; the soak stops here")
            break
    return lines


async def _one_run(options: SoakOptions, seed: int, say: Callable[[str], None]) -> SoakLine:
    if options.data_root is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"ironbook-soak-{seed}-"))
    else:
        data_dir = options.data_root / f"seed-{seed}"
        attempt = 1
        while data_dir.exists():
            attempt += 1
            data_dir = options.data_root / f"seed-{seed}.{attempt}"
    started = time.monotonic()
    started_utc = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    say(f"seed {seed}: starting ({data_dir})")
    report = await run_chaos(replace(options.base, seed=seed, data_dir=data_dir), say)
    if options.data_root is None and report.verdict == "pass":
        shutil.rmtree(data_dir, ignore_errors=True)
    return SoakLine(
        seed=seed,
        verdict=report.verdict,
        ops=report.check.ops if report.check is not None else 0,
        faults=len(report.fault_log),
        duration_s=round(time.monotonic() - started, 1),
        started_utc=started_utc,
        evidence_dir=report.evidence_dir,
        errors=report.errors,
        leftovers=report.environment.leftovers,
    )


def summary_table(lines: list[SoakLine]) -> str:
    rows = [("seed", "ops", "faults", "verdict", "duration s")]
    rows += [
        (
            str(line.seed),
            str(line.ops),
            str(line.faults),
            line.verdict.upper(),
            f"{line.duration_s:.1f}",
        )
        for line in lines
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    text = [
        "  ".join(
            cell.rjust(width) if column != 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    failed = sum(line.verdict != "pass" for line in lines)
    text.append(f"{len(lines)} runs, {failed} failed")
    return "\n".join(text)
