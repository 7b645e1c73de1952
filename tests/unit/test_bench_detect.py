"""The detection benchmark's plan and scoring: a seed draws the same faults,
and precision, recall, lead time and false alerts are counted as documented."""

from __future__ import annotations

import pytest

from ironbook.benchmarks.detect import (
    FAULT_KINDS,
    GRACE_S,
    FaultRecord,
    evaluate,
    parser,
    plan_faults,
)


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
        50.0,  # before the run's start: not counted
        120.0,  # disk_fill, 40 s before its breach
        130.0,  # disk_fill again: true, not a new detection
        345.0,  # nats_cpu, 5 s after its breach, within the grace
        340.0 + GRACE_S + 1,  # after the grace: false
        700.0,  # calm: false
    ]
    result = evaluate(faults, alerts, start_s=60.0, end_s=1_000.0)
    assert result["alerts"] == 5
    assert result["precision"] == pytest.approx(3 / 5, abs=1e-3)
    assert result["recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert result["lead_times_s"] == [40.0, -5.0]
    assert result["lead_time_s_median"] == 17.5
    calm_s = 940.0 - (80.0 + 60.0 + 50.0)
    assert result["false_alerts_per_hour"] == pytest.approx(2 / (calm_s / 3600), abs=0.01)


def test_no_alerts_is_no_precision_and_no_recall() -> None:
    faults = [FaultRecord("disk_fill", 1.0, started_s=10.0, ended_s=20.0, breach_s=20.0)]
    result = evaluate(faults, [], start_s=0.0, end_s=100.0)
    assert (result["precision"], result["recall"], result["lead_time_s_median"]) == (
        None,
        0.0,
        None,
    )


def test_the_fault_kinds_come_as_a_comma_separated_list() -> None:
    args = parser().parse_args(["--faults", "disk_fill, nats_cpu", "--seconds", "5"])
    assert args.faults == ["disk_fill", "nats_cpu"]
    assert args.seconds == 5.0
