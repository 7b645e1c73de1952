"""A run that crashes is a failing run that explains itself: the chaos run
and the race day, with the cluster refusing to start (no cluster is run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ironbook.chaos.evidence import FAILURE_FILE
from ironbook.chaos.run import REPORT_FILE, ChaosOptions, run_chaos
from ironbook.demo.raceday import QUICK_FAULTS, LiveState, RaceDayOptions, run_race_day
from ironbook.services.local_cluster import LocalCluster


def _refuse_to_start(self: LocalCluster, timeout_ms: int = 0) -> None:
    raise RuntimeError("no cluster today")


def test_a_chaos_run_that_crashes_fails_and_keeps_its_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalCluster, "start", _refuse_to_start)
    options = ChaosOptions(
        data_dir=tmp_path / "cluster",
        seed=5,
        faults=("leader_kill",),
        keep_dir=tmp_path / "kept",
    )
    report = asyncio.run(run_chaos(options))
    assert report.verdict == "fail"
    assert report.check is None
    assert report.errors == ["the run crashed: RuntimeError: no cluster today"]
    assert report.evidence_dir is not None
    evidence = Path(report.evidence_dir)
    assert evidence.name.startswith("5-")
    failure = (evidence / FAILURE_FILE).read_text()
    assert "- the run crashed: RuntimeError: no cluster today" in failure
    assert "ironbook chaos --seed 5 --duration 60 --faults leader_kill" in failure
    assert '"evidence_dir"' in (evidence / REPORT_FILE).read_text()


def test_a_race_day_that_crashes_fails_and_keeps_its_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalCluster, "start", _refuse_to_start)
    options = RaceDayOptions(
        data_dir=tmp_path / "cluster",
        seed=9,
        faults=QUICK_FAULTS,
        feed=None,
        command="ironbook demo --quick --seed 9",
        keep_dir=tmp_path / "kept",
    )
    result = asyncio.run(run_race_day(options, LiveState(seed=9, partitions=2)))
    assert result.verdict == "fail"
    assert result.check is None
    assert result.errors == ["the race day crashed: RuntimeError: no cluster today"]
    assert result.evidence_dir is not None
    failure = (Path(result.evidence_dir) / FAILURE_FILE).read_text()
    assert failure == (tmp_path / "cluster" / FAILURE_FILE).read_text()
    assert "ironbook demo --quick --seed 9" in failure
    assert "the race day crashed" in failure
