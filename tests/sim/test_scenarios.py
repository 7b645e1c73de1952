"""Named fault scenarios from issue 3, each forced rather than drawn, so each
is exercised on every run of the suite whatever the seeds happen to draw."""

from __future__ import annotations

import pytest

from ironbook.replication.sim import SimOptions, SimResult, run_seed
from ironbook.replication.sim.faults import Fault, FaultKind, FaultPlan

SEEDS = range(10)


def _plan(*faults: Fault, **rates: float) -> FaultPlan:
    return FaultPlan(
        faults=faults,
        loss_rate=rates.get("loss_rate", 0.0),
        spike_rate=rates.get("spike_rate", 0.0),
        crash_before_append_rate=rates.get("crash_before_append_rate", 0.0),
        crash_after_append_rate=rates.get("crash_after_append_rate", 0.0),
        max_triggered_crashes=1,
    )


def _fault(kind: FaultKind, at_ms: int, duration_ms: int, target: int = 0) -> Fault:
    return Fault(at_ms=at_ms, kind=kind, duration_ms=duration_ms, target=target)


def _runs(plan: FaultPlan) -> list[SimResult]:
    results = [run_seed(seed, SimOptions(faults=plan, trace=True)) for seed in SEEDS]
    for result in results:
        assert result.ok, (result.seed, result.violations)
    return results


def _traced(results: list[SimResult], text: str) -> int:
    return sum(1 for result in results for line in result.trace if text in line)


def test_leader_crash_just_before_an_append_is_sent() -> None:
    results = _runs(_plan(crash_before_append_rate=1.0))
    assert all(result.crashes == 1 for result in results)


def test_leader_crash_after_its_append_landed_before_the_reply() -> None:
    results = _runs(_plan(crash_after_append_rate=1.0))
    assert all(result.crashes == 1 for result in results)
    assert all(result.lease_grants >= 2 for result in results)


def test_two_leaders_at_once_when_the_lease_lapses_under_a_running_leader() -> None:
    results = _runs(_plan(_fault("expire_lease", 100, 0), _fault("expire_lease", 700, 0)))
    assert all(result.lease_grants >= 2 for result in results)


def test_leader_paused_past_its_lease_resumes_into_a_newer_term() -> None:
    results = _runs(_plan(_fault("pause_leader", 150, 2_500)))
    assert all(result.lease_grants >= 2 for result in results)


def test_appends_with_unknown_outcome_are_resolved_by_deduplication() -> None:
    # Lost messages and latency spikes past the append timeout: some appends
    # land unacknowledged and their retry is answered as a duplicate.
    results = _runs(_plan(loss_rate=0.1, spike_rate=0.2))
    assert _traced(results, "is a duplicate of seq") > 0


def test_quorum_loss_longer_than_client_deadlines() -> None:
    results = _runs(_plan(_fault("cluster_down", 200, 2_500)))
    assert all(result.lease_grants >= 1 for result in results)


def test_isolated_leader_and_lagging_follower() -> None:
    results = _runs(
        _plan(_fault("isolate_leader", 200, 2_000), _fault("lag_follower", 0, 3_000, 1))
    )
    assert all(result.lease_grants >= 2 for result in results)


@pytest.mark.parametrize("target", [0, 1, 2])
def test_replica_restart_restores_from_a_snapshot(target: int) -> None:
    results = _runs(_plan(_fault("crash_replica", 1_500, 300, target)))
    assert all(result.crashes == 1 for result in results)
    assert _traced(results, "restores the newest snapshot") == len(SEEDS)


def test_foreign_entries_under_a_busy_leader_cost_no_election() -> None:
    """Garbage and forged batches published onto the log while clients
    write: every one is quarantined, nothing they carry is applied (the
    checker replays with the replicas' key), and the leader keeps its term."""
    plan = _plan(
        _fault("foreign_entries", 200, 0, target=3),
        _fault("foreign_entries", 600, 0, target=4),
        _fault("foreign_entries", 1_000, 0, target=2),
    )
    results = _runs(plan)
    assert all(result.quarantined_entries == 9 for result in results)
    assert all(result.lease_grants == 1 for result in results)
    assert _traced(results, "fault: foreign entry (other_key)") > 0
    assert _traced(results, "fault: foreign entry (garbage)") > 0
