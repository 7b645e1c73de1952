"""`ironbook chaos --soak`: back-to-back runs on fresh clusters, one JSON line
per run in the results file, a summary table, and `--resume` running only
the seeds the results file does not hold yet. The real soak is two runs of
~20 s (one, then a resume that adds the second)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from ironbook.chaos.run import ChaosOptions
from ironbook.chaos.soak import (
    SoakError,
    SoakLine,
    SoakOptions,
    read_results,
    run_soak,
    summary_table,
)
from ironbook.cli import main

SOAK_SEED = 31


def _line(seed: int, verdict: str = "pass") -> SoakLine:
    return SoakLine(
        seed=seed, verdict=verdict, ops=1_000, faults=3, duration_s=61.5, started_utc="x"
    )


def _options(tmp_path: Path, runs: int, *, resume: bool = False) -> SoakOptions:
    base = ChaosOptions(
        data_dir=tmp_path / "unused",
        duration_s=20.0,
        faults=("follower_kill", "leader_kill"),
        clients=4,
        quiet_s=(1.0, 2.0),
        keep_dir=tmp_path / "kept",
    )
    return SoakOptions(
        base=base,
        runs=runs,
        first_seed=SOAK_SEED,
        results=tmp_path / "soak.jsonl",
        resume=resume,
        data_root=tmp_path / "runs",
    )


def test_a_results_file_is_not_reused_without_resume(tmp_path: Path) -> None:
    options = _options(tmp_path, 2)
    options.results.write_bytes(msgspec.json.encode(_line(SOAK_SEED)) + b"\n")
    with pytest.raises(SoakError, match="--resume"):
        asyncio.run(run_soak(options))


def test_a_resumed_soak_that_recorded_a_failure_stays_stopped(tmp_path: Path) -> None:
    options = _options(tmp_path, 3, resume=True)
    options.results.write_bytes(msgspec.json.encode(_line(SOAK_SEED, "fail")) + b"\n")
    lines = asyncio.run(run_soak(options))
    assert [line.seed for line in lines] == [SOAK_SEED]
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_the_summary_table_has_a_row_per_run() -> None:
    table = summary_table([_line(5), _line(6, "fail")])
    rows = table.splitlines()
    assert rows[0].split() == ["seed", "ops", "faults", "verdict", "duration", "s"]
    assert rows[1].split() == ["5", "1000", "3", "PASS", "61.5"]
    assert rows[2].split() == ["6", "1000", "3", "FAIL", "61.5"]
    assert rows[-1] == "2 runs, 1 failed"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resume"], "--resume continues a --soak"),
        (["--soak", "0"], "--soak must be at least 1"),
    ],
)
def test_soak_flags_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_soak_and_its_resume(tmp_path: Path) -> None:
    first = asyncio.run(run_soak(_options(tmp_path, 1)))
    assert [(line.seed, line.verdict) for line in first] == [(SOAK_SEED, "pass")], first
    # The soak was asked for one run; resumed with two, only the second seed runs.
    lines = asyncio.run(run_soak(_options(tmp_path, 2, resume=True)))
    assert [(line.seed, line.verdict) for line in lines] == [
        (SOAK_SEED, "pass"),
        (SOAK_SEED + 1, "pass"),
    ], lines
    assert read_results(tmp_path / "soak.jsonl") == lines
    for line in lines:
        assert line.ops > 0 and line.faults >= 2 and line.evidence_dir is None
        assert (tmp_path / "runs" / f"seed-{line.seed}" / "history.jsonl").exists()
