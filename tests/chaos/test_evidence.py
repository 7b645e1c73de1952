"""A failing run explains itself: failure.md from a made-up failure (the
violations, the operations, the fault timeline and process logs), and the
evidence copied out of the data directory."""

from __future__ import annotations

import time
from pathlib import Path

from ironbook.chaos.evidence import (
    FAILURE_FILE,
    FAULTS_FILE,
    Failure,
    causes,
    evidence_path,
    keep_evidence,
)
from ironbook.chaos.faults import FaultRecord
from ironbook.chaos.history import HISTORY_FILE
from ironbook.replication.checker import Violation
from ironbook.replication.history import Operation

T0_MS = 1_790_000_000_000


def _local_stamp(wall_ms: int) -> str:
    """A log line's time as the processes write it (local time)."""
    seconds = wall_ms / 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f",{wall_ms % 1000:03d}"


def _operation(request_id: str, at_ms: int) -> Operation:
    return Operation(
        client="c3",
        request_id=request_id,
        kind="place_bet",
        invoke_ns=at_ms * 1_000_000,
        complete_ns=(at_ms + 40) * 1_000_000,
        invoke_wall_ms=at_ms,
        complete_wall_ms=at_ms + 40,
        outcome="ok",
        account_id="punter-4",
    )


def _failure() -> Failure:
    return Failure(
        seed=7,
        command="ironbook chaos --seed 7 --duration 45",
        errors=[],
        violations=[
            Violation("lost", "c3-17 was acknowledged but the log has nothing", ["c3-17"], [])
        ],
        faults=[
            FaultRecord("nats_leader_kill", "n2", T0_MS + 2_000, T0_MS + 9_000, "LEDGER_0 down"),
            FaultRecord("follower_kill", "p0-r3", T0_MS + 60_000, T0_MS + 63_000),
        ],
        operations=[_operation("c3-16", T0_MS), _operation("c3-17", T0_MS + 5_000)],
        report_json=b'{"verdict": "fail"}',
        report_name="chaos-report.json",
    )


def _data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "cluster"
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "nats" / "n2" / "jetstream").mkdir(parents=True)
    (data_dir / "nats" / "n2" / "jetstream" / "store.blk").write_bytes(b"not evidence")
    (data_dir / HISTORY_FILE).write_text('{"request_id": "c3-17"}\n')
    (data_dir / "logs" / "p0-r1.log").write_text(
        "\n".join(
            [
                f"{_local_stamp(T0_MS - 60_000)} ironbook.replica INFO leader of term 1",
                f"{_local_stamp(T0_MS + 4_000)} ironbook.replica WARNING append timed out",
                "a line without a time that names c3-17",
                f"{_local_stamp(T0_MS + 90_000)} ironbook.replica INFO snapshot at 900",
            ]
        )
        + "\n"
    )
    (data_dir / "nats" / "n2" / "nats.log").write_text(
        f"[41] {_local_stamp(T0_MS + 2_500).replace('-', '/')} [INF] JetStream cluster new leader\n"
    )
    return data_dir


def test_failure_md_names_the_lost_operation_the_faults_around_it_and_its_log_lines(
    tmp_path: Path,
) -> None:
    data_dir = _data_dir(tmp_path)
    kept = keep_evidence(_failure(), data_dir, tmp_path / "kept" / "7-x")
    text = (data_dir / FAILURE_FILE).read_text()
    assert "ironbook chaos --seed 7 --duration 45" in text
    assert "## 1. lost" in text
    assert "- request ids: c3-17" in text
    section = text.split("## Fault timeline")[0]
    # The kill 3 s before the lost bet is within 10 s of it; a minute later is not.
    assert "nats_leader_kill n2 (LEDGER_0 down)" in section
    assert "follower_kill" not in section
    assert "append timed out" in section
    assert "a line without a time that names c3-17" in section
    assert "JetStream cluster new leader" in section
    assert "leader of term 1" not in section  # a minute before: not in the window
    assert "snapshot at 900" not in section
    assert "follower_kill p0-r3" in text.split("## Fault timeline")[1]
    # The evidence: everything but the JetStream store.
    assert (kept / FAILURE_FILE).read_text() == text
    assert (kept / FAULTS_FILE).read_text().count("\n") == 2
    assert (kept / HISTORY_FILE).exists() and (kept / "chaos-report.json").exists()
    assert (kept / "logs" / "p0-r1.log").exists() and (kept / "nats" / "n2" / "nats.log").exists()
    assert not (kept / "nats" / "n2" / "jetstream").exists()


def test_a_violation_without_operations_is_placed_by_its_log_time(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path)
    failure = Failure(
        seed=7,
        command="ironbook chaos --seed 7",
        errors=[],
        violations=[Violation("conservation", "after seq 40: ...", seqs=[40], at_ms=T0_MS + 5_000)],
        faults=_failure().faults,
        operations=[],
        report_json=b"{}",
        report_name="chaos-report.json",
    )
    keep_evidence(failure, data_dir, tmp_path / "kept")
    section = (data_dir / FAILURE_FILE).read_text().split("## Fault timeline")[0]
    assert "- log positions: 40" in section
    assert "nats_leader_kill n2" in section and "follower_kill" not in section
    assert "append timed out" in section


def test_a_failure_without_violations_shows_the_errors_and_each_log_tail(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path)
    failure = Failure(
        seed=7,
        command="ironbook chaos --seed 7",
        errors=["the load failed: RuntimeError: boom"],
        violations=[],
        faults=[],
        operations=[],
        report_json=b"{}",
        report_name="chaos-report.json",
    )
    keep_evidence(failure, data_dir, tmp_path / "kept")
    text = (data_dir / FAILURE_FILE).read_text()
    assert "- the load failed: RuntimeError: boom" in text
    assert "## The end of each process's log" in text
    assert "snapshot at 900" in text
    assert "no faults were injected" in text


def test_the_evidence_directory_is_named_by_seed_and_utc_time(tmp_path: Path) -> None:
    path = evidence_path(tmp_path / "chaos-failures", 90210, now_s=T0_MS / 1000)
    assert path == (tmp_path / "chaos-failures").resolve() / "90210-20260921T141320Z"


def test_causes_unwrap_task_group_errors() -> None:
    group = ExceptionGroup("tasks", [RuntimeError("a"), ExceptionGroup("inner", [KeyError("b")])])
    assert causes(group) == ["RuntimeError: a", "KeyError: 'b'"]
    assert causes(ValueError("c")) == ["ValueError: c"]
