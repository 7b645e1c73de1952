"""The chaos run's audit section, its pure parts: which events name a
leader's election, and the report line."""

from __future__ import annotations

from ironbook.chaos.audit import AuditCheck, LogAudit, audit_line, leader_of


def test_a_leader_elected_event_names_its_partition_and_term() -> None:
    assert leader_of("leader_elected", "partition 3", "term 12 at seq 4051") == (3, 12)
    assert leader_of("leader_elected", "partition 0", "term 1 at seq 0") == (0, 1)
    # Another kind, or a target or detail of another shape, names no leader.
    assert leader_of("process_restarted", "partition 3", "term 12 at seq 4051") is None
    assert leader_of("leader_elected", "partitions 3", "term 12 at seq 4051") is None
    assert leader_of("leader_elected", "partition 3", "terms 12") is None
    assert leader_of("leader_elected", "partition x", "term 12 at seq 1") is None


def test_the_report_line_says_what_failed() -> None:
    passed = AuditCheck(
        verdict="pass",
        logs={"0": LogAudit(True, 900, 7), "events": LogAudit(True, 40, 3, unsealed=True)},
        leaders_seen=5,
        leaders_recorded=5,
        leader_events=6,
    )
    assert audit_line(passed) == (
        "audit: PASS; 2 logs verified (940 entries, some not yet checkpointed); "
        "leaders seen 5, recorded 5"
    )
    failed = AuditCheck(
        verdict="fail",
        logs={"0": LogAudit(False, 10, 0, problem="seq 4: leaf hash differs")},
        leaders_seen=2,
        leaders_recorded=1,
        leader_events=1,
        missing=["partition 0 term 2 (p0-r3)"],
    )
    assert audit_line(failed) == (
        "audit: FAIL; 1 logs verified (10 entries); leaders seen 2, recorded 1; "
        "0: seq 4: leaf hash differs; not recorded: partition 0 term 2 (p0-r3)"
    )
