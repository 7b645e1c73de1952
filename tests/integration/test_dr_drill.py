"""`ironbook dr drill` in its short mode, for real: both sites as real
nats-servers and services, site A cut off by SIGKILL of every one of its
processes, the loss detected, site B promoted, the workload going on
against B, the whole history judged against B's log, then site A back,
failed back to, and the history judged again against A's log."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from ironbook.chaos.drill import DETECT_SILENT_S, DrillOptions, run_drill
from ironbook.chaos.drill_report import REPORT_JSON, REPORT_MD, REPORT_PNG, write_drill_report
from ironbook.chaos.history import read_history
from ironbook.services import dr

SHORT_S = 30.0


def test_a_short_drill_loses_site_a_and_passes_on_site_b(tmp_path: Path) -> None:
    options = DrillOptions(data_dir=tmp_path / "drill", seed=1, duration_s=SHORT_S)
    # Each line as it comes, timed: pytest shows them if the test fails or
    # times out, so a stuck step names itself.
    started = time.monotonic()
    report = asyncio.run(
        run_drill(
            options, lambda line: print(f"{time.monotonic() - started:7.1f}  {line}", flush=True)
        )
    )
    assert report.verdict == "pass", (report.errors, report.check)
    assert report.duplicated == 0 and report.conserved is True
    assert report.check is not None and report.check.lost == 0
    assert report.errors == []

    # Site A served, then nothing until B, after the loss was detected and
    # B promoted (epoch 2), acknowledged writes again.
    marks = report.marks
    assert report.acks_on_a > 0 and report.acks_on_b > 0
    assert marks.workload_ms < marks.cut_ms < marks.detected_ms < marks.promote_started_ms
    assert marks.promote_started_ms < marks.promoted_ms
    assert marks.promote_started_ms <= marks.first_ack_b_ms
    assert marks.last_ack_a_ms < marks.promote_started_ms
    assert report.detect_s is not None and report.detect_s >= DETECT_SILENT_S
    assert report.rto_s is not None and report.rto_s >= report.detect_s
    assert dr.read_primary(tmp_path / "drill").epoch == 3  # promoted (2), failed back (3)
    assert any("site b mirrors promoted" in step for step in report.promotion)

    # RPO: what A acknowledged and B lacks is counted, each one listed with
    # its acknowledgement time, and spans no more than A's own time.
    assert report.rpo_acked_lost == len(report.rpo_lost)
    assert report.rpo_s is not None and report.rpo_s >= 0
    if not report.rpo_lost:
        assert report.rpo_s == 0
    assert all(loss.acked_wall_ms <= marks.last_ack_a_ms for loss in report.rpo_lost)
    assert report.kept_seq["LEDGER_0"] > 0
    assert report.wan_rtt_ms is not None and report.wan_rtt_ms >= report.wan_rtt_ms_configured
    # Failback: site A primary again, every write B took on A's log too.
    assert report.failback_report is not None and report.failback_report.epoch == 3
    assert report.failback_s is not None and report.failback_s > 0
    assert marks.promoted_ms < marks.failback_started_ms < marks.failed_back_ms
    back = report.failback_check
    assert back is not None and back.verdict == "pass" and back.lost == 0, back
    assert back.rpo_acked_lost == report.rpo_acked_lost
    assert report.audit is not None  # shown, whatever it says

    files = write_drill_report(report, read_history(Path(report.history)), tmp_path / "report")
    assert [path.name for path in files] == [REPORT_JSON, REPORT_MD, REPORT_PNG]
    written = json.loads(files[0].read_text())
    assert written["verdict"] == "pass" and written["failback_s"] == report.failback_s
    assert files[2].stat().st_size > 0
