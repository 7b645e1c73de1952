"""The detection benchmark's plan and scoring: a seed draws the same faults,
and precision, recall, lead time and false alerts are counted as documented:
an alert is true only within a fault's window and on a series it explains."""

from __future__ import annotations

import pytest

from ironbook.benchmarks.detect import (
    EXPLAINED_BY,
    FAULT_KINDS,
    GRACE_S,
    HEALED_BY,
    THRESHOLD_RULES,
    FaultRecord,
    evaluate,
    parser,
    plan_faults,
    remediation_report,
)
from ironbook.services.remediate import ACTIONS, ActionKind, RemediationRecord
from ironbook.services.watch import watched_series
from ironbook.settings import WatchSettings


def test_a_seed_draws_one_plan_and_another_seed_another() -> None:
    plan = plan_faults(3, FAULT_KINDS, 30.0)
    assert plan == plan_faults(3, FAULT_KINDS, 30.0)
    assert plan != plan_faults(4, FAULT_KINDS, 30.0)
    assert sorted(f.kind for f in plan) == sorted(FAULT_KINDS)
    assert all(21.0 <= f.calm_s <= 39.0 for f in plan)


def test_scoring_counts_true_and_false_alerts_and_lead_times() -> None:
    faults = [
        FaultRecord("disk_fill", 1.0, started_s=100.0, ended_s=160.0, breach_s=160.0),
        FaultRecord("nats_cpu", 1.0, started_s=300.0, ended_s=340.0, breach_s=340.0),
        FaultRecord("replica_stall", 1.0, started_s=500.0, ended_s=530.0, breach_s=None),
    ]
    alerts = [
        (50.0, "disk_free_bytes"),  # before the run's start: not counted
        (120.0, "disk_free_bytes"),  # disk_fill, 40 s before its breach
        (130.0, "disk_free_bytes"),  # disk_fill again: true, not a new detection
        (140.0, "bets_per_s"),  # during disk_fill, but the disk does not explain it: false
        (345.0, "append_latency_p99_s"),  # nats_cpu, 5 s after its breach, within the grace
        (340.0 + GRACE_S + 1, "append_latency_p99_s"),  # after the grace: false
        (700.0, "scrape_up"),  # calm: false
    ]
    result = evaluate(faults, alerts, start_s=60.0, end_s=1_000.0)
    assert result["alerts"] == 6
    assert result["precision"] == pytest.approx(3 / 6, abs=1e-3)
    assert result["recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert result["detected"] == ["disk_fill", "nats_cpu"]
    assert result["lead_times_s"] == {"disk_fill": 40.0, "nats_cpu": -5.0}
    assert result["lead_time_s_median"] == 17.5
    calm_s = 940.0 - (80.0 + 60.0 + 50.0)
    assert result["calm_s"] == calm_s
    assert result["false_alerts_per_hour"] == pytest.approx(3 / (calm_s / 3600), abs=0.01)


def test_no_alerts_is_no_precision_and_no_recall() -> None:
    faults = [FaultRecord("disk_fill", 1.0, started_s=10.0, ended_s=20.0, breach_s=20.0)]
    result = evaluate(faults, [], start_s=0.0, end_s=100.0)
    assert (result["precision"], result["recall"], result["lead_time_s_median"]) == (
        None,
        0.0,
        None,
    )


def test_every_fault_kind_explains_some_series_the_watcher_watches() -> None:
    names = {query.spec.name for query in watched_series(WatchSettings())}
    rules = THRESHOLD_RULES.read_text()
    for kind in FAULT_KINDS:
        assert EXPLAINED_BY[kind] & names, kind
        for name in EXPLAINED_BY[kind] - names:
            assert f"alert: {name}\n" in rules, name


def test_the_fault_kinds_come_as_a_comma_separated_list() -> None:
    args = parser().parse_args(["--faults", "disk_fill, nats_cpu", "--seconds", "5"])
    assert args.faults == ["disk_fill", "nats_cpu"]
    assert args.seconds == 5.0


def test_the_remediation_mode_is_live_unless_asked() -> None:
    assert parser().parse_args([]).remediation == "live"
    assert parser().parse_args(["--remediation", "dry-run"]).remediation == "dry-run"
    with pytest.raises(SystemExit):
        parser().parse_args(["--remediation", "sometimes"])


def _action(
    action: ActionKind, target: str, decided_s: float, done_s: float | None, detector: str
) -> RemediationRecord:
    return RemediationRecord(
        action=action,
        target=target,
        reason="r",
        evidence="e",
        detector=detector,
        series="s",
        dry_run=done_s is None,
        decided_at_s=decided_s,
        done_at_s=done_s,
        outcome="done" if done_s is not None else "dry run: not done",
    )


FAULTS = [
    FaultRecord("disk_fill", 1.0, 100.0, ended_s=160.0, breach_s=160.0, target="/disk"),
    # Healed with no breach, by a forecast's restart.
    FaultRecord("memory_leak", 1.0, 200.0, ended_s=230.0, target="memory-leaker"),
    # Acted on, but the move took effect after the breach.
    FaultRecord("nats_cpu", 1.0, 300.0, ended_s=340.0, breach_s=330.0, target="n1"),
    # Killed before its breach, by the trees' finding.
    FaultRecord("replica_stall", 1.0, 500.0, ended_s=520.0, breach_s=530.0, target="p0-r2"),
]


def test_healed_before_breach_counts_effective_actions_on_the_faults_own_target() -> None:
    records = [
        _action("restart_replica", "memory-leaker", 220.0, 225.0, "forecast"),
        _action("move_nats_leaders", "n1", 325.0, 331.0, "windowed_gaussian"),
        _action("move_nats_leaders", "n2", 310.0, 311.0, "windowed_gaussian"),  # not its target
        _action("kill_restart", "p0-r2", 510.0, 512.0, "half_space_trees"),
        _action("restart_replica", "p0-r1", 900.0, 905.0, "windowed_gaussian"),  # in calm
    ]
    report = remediation_report(FAULTS, records, "live", start_s=0.0)
    assert report["remediable_faults"] == ["memory_leak", "nats_cpu", "replica_stall"]
    assert report["healed"] == ["memory_leak", "replica_stall"]
    assert report["healed_before_breach"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["healed_before_breach_by_detector"] == {
        "windowed_gaussian": 0.0,
        "half_space_trees": pytest.approx(1 / 3, abs=1e-3),
        "forecast": pytest.approx(1 / 3, abs=1e-3),
    }
    assert [a["target"] for a in report["actions"]] == [r.target for r in records]
    assert report["actions"][0]["took_s"] == 5.0


def test_a_dry_run_counts_decisions_and_off_counts_nothing() -> None:
    records = [_action("restart_replica", "memory-leaker", 220.0, None, "forecast")]
    dry = remediation_report(FAULTS, records, "dry-run", start_s=0.0)
    assert "healed_before_breach" not in dry
    assert dry["decided_before_breach"] == pytest.approx(1 / 3, abs=1e-3)
    off = remediation_report(FAULTS, [], "off", start_s=0.0)
    assert off["healed_before_breach"] is None and off["actions"] == []


def test_every_remediable_fault_is_healed_by_an_action_there_is() -> None:
    assert set(HEALED_BY) < set(FAULT_KINDS)
    for actions in HEALED_BY.values():
        assert actions <= set(ACTIONS)
