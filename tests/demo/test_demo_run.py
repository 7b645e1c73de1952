"""One real race day, short: `ironbook demo --quick` on a real local cluster
(with the odds feed), faults at the peak, then the checker's verdict and the
three report files. Timing-free: only the outcome is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

IRONBOOK = Path(sys.executable).with_name("ironbook")
RUN_TIMEOUT_S = 600


def test_a_quick_race_day_passes_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            str(IRONBOOK),
            "demo",
            "--quick",
            "--seconds",
            "20",
            "--no-dashboard",
            "--seed",
            "11",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "cluster"),
            "--keep",
            str(tmp_path / "kept"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "VERDICT: PASS" in done.stdout
    assert "THE OFF" in done.stdout
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0, name
        assert f"wrote {out / name}" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass" and report["evidence_dir"] is None
    check = report["check"]
    assert check["lost"] == 0 and check["duplicated"] == 0
    assert check["conserved"] and check["replicas_agree"]
    assert check["ok"] > 0 and report["bets_ok"] > 0
    assert {f["kind"] for f in report["fault_log"]} == {"leader_kill", "nats_leader_kill"}
    assert "leftovers" in report["environment"]
    kinds = {fault["kind"] for fault in report["timeline"]["faults"]}
    assert kinds == {"leader_kill", "nats_leader_kill"}
    assert [phase["name"] for phase in report["timeline"]["phases"]] == [
        "steady",
        "surge",
        "the off",
    ]
    assert "Gold Cup" in report["big_race"]
    assert "**Verdict: PASS**" in (out / "report.md").read_text()
    # The monitoring stack runs by default (its Debian packages are installed
    # by `make`): the console was there, and every alert sent is in the report.
    if "no monitoring:" not in done.stdout:
        assert any(note.startswith("ops console at http://127.0.0.1:") for note in report["notes"])
        assert isinstance(report["alerts"], list)


def test_bad_usage_is_a_clear_error() -> None:
    done = subprocess.run(
        [str(IRONBOOK), "demo", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--seconds must be at least" in done.stderr
