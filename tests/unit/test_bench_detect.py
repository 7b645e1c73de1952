"""The detection benchmark's plan and scoring: a seed draws the same faults,
and precision, recall, lead time and false alerts are counted as documented:
an alert is true only within a fault's window and on a series it explains."""

from __future__ import annotations

import pytest

from ironbook.benchmarks.detect import (
    EXPLAINED_BY,
    FAULT_KINDS,
    GRACE_S,
    THRESHOLD_RULES,
    FaultRecord,
    evaluate,
    parser,
    plan_faults,
)
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
