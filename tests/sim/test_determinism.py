"""One seed is one exact replay: in this process, and in another process with
a different string-hash seed."""

from __future__ import annotations

import os
import subprocess
import sys

from ironbook.replication.sim import run_seed

SEEDS = (3, 891, 1850, 4242)


def test_same_seed_same_run() -> None:
    for seed in SEEDS:
        first, second = run_seed(seed), run_seed(seed)
        assert first == second
        assert first.fingerprint


def test_different_seeds_differ() -> None:
    assert len({run_seed(seed).fingerprint for seed in SEEDS}) == len(SEEDS)


def test_replay_in_another_process_with_another_hash_seed() -> None:
    script = (
        "from ironbook.replication.sim import run_seed\n"
        f"print(' '.join(run_seed(s).fingerprint for s in {SEEDS!r}))\n"
    )
    here = " ".join(run_seed(seed).fingerprint for seed in SEEDS)
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here
