"""Alerts set against the faults of a run: a firing alert within a fault's
window is its detection (time to fire from the injection, to resolve from the
heal), one outside every window is a false alert, and a fault nothing fired
for is injected but not detected."""

from __future__ import annotations

from ironbook.chaos.alerts import AFTER_HEAL_S, judge_alerts
from ironbook.chaos.faults import FaultRecord
from ironbook.cli.chaos import parse_faults
from ironbook.services.ops.alerts import AlertRecord


def _alert(
    at_ms: int,
    status: str,
    alertname: str,
    fingerprint: str,
    severity: str = "page",
    starts_at: str = "",
    **labels: str,
) -> AlertRecord:
    return AlertRecord(
        received_at_ms=at_ms,
        status=status,  # type: ignore[arg-type]
        alertname=alertname,
        severity=severity,
        fingerprint=fingerprint,
        labels={"alertname": alertname, **labels},
        annotations={},
        starts_at=starts_at,
        ends_at="",
    )


def test_detections_times_and_false_alerts() -> None:
    faults = [
        FaultRecord("leader_pause", "p0-r1", injected_wall_ms=10_000, healed_wall_ms=14_000),
        FaultRecord("leader_pause", "p0-r2", injected_wall_ms=40_000, healed_wall_ms=43_000),
        FaultRecord("follower_kill", "p0-r3", injected_wall_ms=70_000, healed_wall_ms=71_000),
        FaultRecord("drain", "n2", injected_wall_ms=100_000, healed_wall_ms=104_000),
    ]
    late = 43_000 + int(AFTER_HEAL_S * 1000) + 1
    records = [
        _alert(2_000, "firing", "IronbookReplicaDown", "start"),  # before any fault
        _alert(16_000, "firing", "IronbookReplicaDown", "a"),
        _alert(15_000, "firing", "IronbookNoLedgerLeader", "b"),
        _alert(18_000, "resolved", "IronbookNoLedgerLeader", "b"),
        _alert(20_000, "resolved", "IronbookReplicaDown", "a"),
        _alert(44_000, "firing", "IronbookReplicaDown", "c"),
        _alert(47_000, "resolved", "IronbookReplicaDown", "c"),
        _alert(late, "firing", "IronbookFeedStale", "d"),  # after the window
        _alert(101_000, "firing", "IronbookMaintenance", "e", severity="info"),
        _alert(103_000, "firing", "IronbookNatsServerRestarted", "f", severity="info"),
    ]
    verdict = judge_alerts(faults, records)
    pause = verdict.alerts["leader_pause"]
    assert (pause.injected, pause.detected) == (2, 2)
    assert pause.median_fire_s == (5.0 + 4.0) / 2
    assert pause.median_resolve_s == (6.0 + 4.0) / 2
    assert pause.alertnames == ["IronbookNoLedgerLeader", "IronbookReplicaDown"]
    assert pause.paging == 3
    drain = verdict.alerts["drain"]
    assert (drain.detected, drain.paging, drain.median_fire_s) == (1, 0, 1.0)
    kill = verdict.alerts["follower_kill"]
    assert (kill.injected, kill.detected, kill.median_fire_s) == (1, 0, None)
    assert verdict.false_alerts == 2
    assert verdict.false_alertnames == ["IronbookFeedStale", "IronbookReplicaDown"]


def test_a_calm_run_with_no_alert_has_none_false() -> None:
    verdict = judge_alerts([], [])
    assert verdict.alerts == {} and verdict.false_alerts == 0


def test_faults_none_is_a_calm_run() -> None:
    assert parse_faults("none") == []


def test_an_alert_in_two_windows_belongs_to_the_latest_fault() -> None:
    faults = [
        FaultRecord("leader_pause", "p0-r2", injected_wall_ms=10_000, healed_wall_ms=14_000),
        FaultRecord("follower_kill", "p0-r2", injected_wall_ms=17_000, healed_wall_ms=21_000),
    ]
    verdict = judge_alerts(faults, [_alert(22_000, "firing", "IronbookReplicaDown", "a")])
    assert verdict.alerts["follower_kill"].detected == 1
    assert verdict.alerts["leader_pause"].detected == 0


def test_an_alert_naming_a_fault_s_target_is_that_fault_s_and_counts_once() -> None:
    faults = [
        FaultRecord("gateway_kill", "gw-2", injected_wall_ms=10_000, healed_wall_ms=12_000),
        FaultRecord("latency", "node2", injected_wall_ms=15_000, healed_wall_ms=19_000),
        FaultRecord("drain", "n1", injected_wall_ms=40_000, healed_wall_ms=45_000),
    ]
    restarted = {"worker": "gw-2", "severity": "info"}
    slow = {"name": "n2", "node": "2", "severity": "ticket"}
    records = [
        # The worker's restart is seen after the next fault began.
        _alert(
            17_000, "firing", "IronbookGatewayWorkerRestarted", "w", starts_at="t1", **restarted
        ),
        _alert(18_000, "firing", "IronbookNatsServerSlow", "s", starts_at="t2", **slow),
        # Sent again with a group update during a later fault: not a new alert.
        _alert(41_000, "firing", "IronbookNatsServerSlow", "s", starts_at="t2", **slow),
        _alert(42_000, "firing", "IronbookMaintenance", "m", "info", "t3", name="n1"),
    ]
    verdict = judge_alerts(faults, records)
    assert verdict.alerts["gateway_kill"].alertnames == ["IronbookGatewayWorkerRestarted"]
    assert verdict.alerts["latency"].alertnames == ["IronbookNatsServerSlow"]
    assert verdict.alerts["drain"].alertnames == ["IronbookMaintenance"]
    assert verdict.alerts["drain"].paging == 0
    assert verdict.false_alerts == 0


def test_a_fault_on_a_target_whose_alert_still_fires_is_detected_by_it() -> None:
    faults = [
        FaultRecord("latency", "node3", injected_wall_ms=10_000, healed_wall_ms=15_000),
        FaultRecord("latency", "node3", injected_wall_ms=17_000, healed_wall_ms=20_000),
        FaultRecord("latency", "node1", injected_wall_ms=40_000, healed_wall_ms=43_000),
    ]
    slow = {"name": "n3", "node": "3", "severity": "ticket"}
    records = [
        _alert(13_000, "firing", "IronbookNatsServerSlow", "s3", starts_at="t1", **slow),
        _alert(23_000, "resolved", "IronbookNatsServerSlow", "s3", starts_at="t1", **slow),
    ]
    latency = judge_alerts(faults, records).alerts["latency"]
    assert (latency.injected, latency.detected, latency.already_firing) == (3, 2, 1)
    assert latency.median_fire_s == (3.0 + 0.0) / 2
