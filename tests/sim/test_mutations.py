"""Each deliberate protocol bug must be caught by the checker within the
seeds the normal suite runs."""

from __future__ import annotations

import pytest

from ironbook.replication.sim import Mutation, SimOptions, run_seed

MUTATION_SEEDS = 300


@pytest.mark.parametrize(
    ("mutation", "expected_kinds"),
    [
        ("reply_before_ack", {"lost_ack", "outcome_mismatch", "inconsistent_replies"}),
        ("skip_fencing", {"applied_twice", "invariant", "outcome_mismatch", "rejection_applied"}),
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
    # Seeds where a deposed leader's pipelined batch landed (and was voided).
    # With predecessors forged, replay applies those batches, and the checker
    # must see the damage: the expected-sequence check alone is not a fence.
    void_seeds = [seed for seed in range(200) if run_seed(seed).void_entries]
    assert void_seeds, "no seed in 0..199 produced a void entry"
    mutated = [run_seed(seed, SimOptions(mutation="skip_chain_check")) for seed in void_seeds]
    assert any(not result.ok for result in mutated), f"chain check never mattered: {void_seeds}"
