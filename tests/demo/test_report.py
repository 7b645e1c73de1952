"""The race day report and chart, from a synthetic timeline (no cluster)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import msgspec

from ironbook.demo.raceday import PhaseTiming, RaceDayResult
from ironbook.demo.report import verdict_lines, write_report
from ironbook.demo.timeline import AlertMark, FaultMark, PhaseMark, Sample, Timeline
from ironbook.replication.checker import CheckReport, Violation


def synthetic_timeline(seconds: int = 60) -> Timeline:
    samples = []
    for t in range(seconds):
        stalled = 30 <= t < 36
        bets = 0 if stalled else 300 + 20 * t
        samples.append(
            Sample(
                t_s=t,
                clients=6 if t < 15 else 64,
                bets_ok=bets,
                ops=bets + 40,
                refused=3,
                unknown=0,
                latency_ms_p50=None if stalled else 20.0,
                latency_ms_p99=None if stalled else 90.0 + (4_000.0 if t == 36 else 0.0),
            )
        )
    return Timeline(
        samples=samples,
        phases=[
            PhaseMark("steady", 0.0, 15.0),
            PhaseMark("surge", 15.0, 55.0),
            PhaseMark("the off", 55.0, 56.0),
        ],
        faults=[
            FaultMark("leader_kill", "p0-r1", 0, 22.0, 26.5, "new leader after 900 ms", 950),
            FaultMark("nats_leader_kill", "n2", 1, 30.0, 40.0, "stream LEDGER_1 down 3 s", 6_100),
        ],
        skipped_faults=["a node cut off by a network partition: partition: needs root"],
    )


def synthetic_result(verdict: str = "pass") -> RaceDayResult:
    timeline = synthetic_timeline()
    return RaceDayResult(
        verdict=verdict,
        seed=7,
        seconds=60.0,
        partitions=2,
        peak_clients=64,
        check=CheckReport(
            verdict=verdict,  # type: ignore[arg-type]
            ops=20_000,
            ok=18_000,
            fail=1_000,
            info=3,
            reads=997,
            info_applied=2,
            info_absent=1,
            lost=0 if verdict == "pass" else 2,
            duplicated=0,
            conserved=True,
            no_negative_balance=True,
            replicas_agree=True,
            reads_consistent=True,
            log_entries=3_000,
            void_entries=0,
            replica_hashes={},
            log_hash=None,
            violations=[]
            if verdict == "pass"
            else [Violation("lost", "c1-5 was acknowledged but the log has nothing", ["c1-5"])],
            violation_counts={} if verdict == "pass" else {"lost": 2},
        ),
        bets_ok=sum(s.bets_ok for s in timeline.samples),
        peak_bets_per_s=max(s.bets_ok for s in timeline.samples),
        big_race="The Ironbook Gold Cup: won by Split Brain",
        feed="simulated provider, 200 odds changes/s",
        notes=["each node in its own network namespace (ibkabcden*, 10.1.2.0/24)"],
        phases=[PhaseTiming("cluster start", 3.0), PhaseTiming("check", 8.0)],
        timeline=timeline,
        events=["22.0s  leader_kill (partition 0) injected", "25.0s  supervisor: feed-sim exited"],
        errors=[],
        history="/tmp/x/history.jsonl",
        data_dir="/tmp/x",
        command="ironbook demo --seed 7 --seconds 60",
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_three_files_are_written(tmp_path: Path) -> None:
    files = write_report(synthetic_result(), tmp_path / "out")
    assert files.markdown.exists() and files.json.exists() and files.chart.exists()
    width, height = png_size(files.chart)
    assert width >= 800 and height >= 500
    # A chart with two lines, shaded phases and fault bands is not a blank canvas.
    assert files.chart.stat().st_size > 30_000


def test_the_json_report_round_trips(tmp_path: Path) -> None:
    result = synthetic_result()
    files = write_report(result, tmp_path)
    data = json.loads(files.json.read_text())
    assert data["verdict"] == "pass"
    assert data["check"]["lost"] == 0 and data["check"]["duplicated"] == 0
    assert len(data["timeline"]["samples"]) == 60
    assert [f["kind"] for f in data["timeline"]["faults"]] == ["leader_kill", "nats_leader_kill"]
    assert msgspec.json.decode(files.json.read_bytes(), type=RaceDayResult) == result


def test_the_markdown_says_what_ran_the_faults_the_verdict_and_how_to_repeat(
    tmp_path: Path,
) -> None:
    text = write_report(synthetic_result(), tmp_path).markdown.read_text()
    assert "**Verdict: PASS**" in text
    assert "| 22.0 | leader_kill | p0-r1 | 0 | 4.5 | 950 |" in text
    assert "| 30.0 | nats_leader_kill | n2 | 1 | 10.0 | 6,100 |" in text
    assert "not injected: a node cut off by a network partition" in text
    assert "| cluster start | 3.0 |" in text
    assert "ironbook demo --seed 7 --seconds 60" in text
    assert "![bets/s and p99 latency, faults marked](report.png)" in text
    assert "25.0s  supervisor: feed-sim exited" in text
    assert "odds feed: simulated provider, 200 odds changes/s." in text
    assert "- each node in its own network namespace" in text


def test_a_failing_verdict_names_the_violations(tmp_path: Path) -> None:
    result = synthetic_result("fail")
    text = write_report(result, tmp_path).markdown.read_text()
    assert "**Verdict: FAIL**" in text
    assert "**lost**: c1-5 was acknowledged" in text
    headline, *rest = verdict_lines(result)
    assert headline == "VERDICT: FAIL"
    assert "lost 2" in rest[1]


def test_an_empty_timeline_still_gives_a_chart(tmp_path: Path) -> None:
    result = synthetic_result()
    result.timeline = Timeline()
    files = write_report(result, tmp_path)
    assert png_size(files.chart)[0] > 0
    assert "No fault was injected." in files.markdown.read_text()


def test_a_monitored_day_shows_its_alerts_on_the_faults_the_timeline_and_the_chart(
    tmp_path: Path,
) -> None:
    plain = write_report(synthetic_result(), tmp_path / "plain")
    result = synthetic_result()
    result.alerts = ["10:00:24 firing   IronbookReplicaDown name=p0-r1 (page)"]
    result.timeline.faults[0] = msgspec.structs.replace(
        result.timeline.faults[0], alerts=["IronbookReplicaDown +2.1 s"]
    )
    result.timeline.alerts = [
        AlertMark("IronbookReplicaDown", "page", "name=p0-r1", 24.1, 29.5),
        AlertMark("IronbookNatsServerRestarted", "info", "name=n2", 41.0, None),
    ]
    files = write_report(result, tmp_path / "monitored")
    text = files.markdown.read_text()
    assert "| 950 | IronbookReplicaDown +2.1 s | new leader after 900 ms |" in text
    assert "| 6,100 | none | stream LEDGER_1 down 3 s |" in text
    timeline = text.split("## Timeline", 1)[1].split("```")[1].splitlines()
    assert [line for line in timeline if line] == [
        "22.0s  leader_kill (partition 0) injected",
        "24.1s  ALERT IronbookReplicaDown name=p0-r1 (page)",
        "25.0s  supervisor: feed-sim exited",
        "29.5s  resolved IronbookReplicaDown name=p0-r1 (page)",
        "41.0s  ALERT IronbookNatsServerRestarted name=n2 (info)",
    ]
    # The chart gains a row per alert name under the two lines.
    assert png_size(files.chart)[1] > png_size(plain.chart)[1]
