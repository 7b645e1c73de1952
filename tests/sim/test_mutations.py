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
