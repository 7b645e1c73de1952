"""Each deliberate protocol bug must be caught by the checker within the
seeds the normal suite runs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ironbook.replication.sim import Mutation, SimOptions, SimTiming, run_seed
from ironbook.replication.sim.faults import Fault, FaultPlan

MUTATION_SEEDS = 300


@pytest.mark.parametrize(
    ("mutation", "expected_kinds"),
    [
        ("reply_before_ack", {"lost", "outcome_mismatch", "inconsistent_replies"}),
        (
            "skip_fencing",
            {"duplicated", "invariant", "conservation", "outcome_mismatch", "rejection_applied"},
        ),
    ],
)
def test_mutation_is_caught(mutation: Mutation, expected_kinds: set[str]) -> None:
    caught: list[int] = []
    kinds: set[str] = set()
    for seed in range(MUTATION_SEEDS):
        result = run_seed(seed, SimOptions(mutation=mutation))
        if not result.ok:
            caught.append(seed)
            kinds.update(v.kind for v in result.violations)
    assert caught, f"{mutation} survived {MUTATION_SEEDS} seeds"
    assert kinds & expected_kinds, f"{mutation} caught only as {sorted(kinds)}"
    print(f"{mutation}: caught by {len(caught)}/{MUTATION_SEEDS} seeds, first {caught[0]}")


def test_unmutated_runs_of_the_same_seeds_pass() -> None:
    # The mutation seeds above fail because of the mutation, not the seeds.
    for seed in range(0, MUTATION_SEEDS, 10):
        assert run_seed(seed).ok


def test_the_chain_check_is_load_bearing() -> None:
    # Leases lapsing under a busy leader with slow appends: deposed leaders'
    # pipelined batches land behind a rival's entry (and are voided). With
    # predecessors forged, replay applies them, and the checker must see the
    # damage: the log's expected-sequence check alone is not a fence.
    lapses = tuple(
        Fault(at_ms=100 + n * 200, kind="expire_lease", duration_ms=0, target=0) for n in range(6)
    )
    plan = FaultPlan(
        faults=lapses,
        loss_rate=0.0,
        spike_rate=0.3,
        crash_before_append_rate=0.0,
        crash_after_append_rate=0.0,
        max_triggered_crashes=0,
    )
    # Every client's command in its own request, so the leader is busy with
    # many at once and pipelines its appends.
    busy = SimOptions(clients=6, faults=plan, timing=SimTiming(client_inflight_batches=(16,)))
    correct = [run_seed(seed, busy) for seed in range(40)]
    assert all(result.ok for result in correct)
    assert sum(1 for result in correct if result.void_entries) >= 5
    mutated = [run_seed(seed, replace(busy, mutation="skip_chain_check")) for seed in range(40)]
    assert sum(1 for result in mutated if not result.ok) >= 2
