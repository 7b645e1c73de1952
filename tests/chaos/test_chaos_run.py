"""Chaos in CI: a real local cluster under the workload and a fixed-seed
fault schedule that injects every implemented fault kind (the network ones,
`partition` and `latency`, with each node in its own network namespace;
skipped with the reason where namespaces cannot be made), then the history
checker's verdict. And the other direction: with a deliberately broken
replica (the TEST-ONLY `reply_before_ack` mutation) the checker must fail
the run with acknowledged operations lost.

Slow (minutes on a busy 2-core machine) and timing-free: nothing asserts how
long anything took, only what the checker concluded.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ironbook.adapters.netns import leftover_names, unavailable_reason
from ironbook.chaos.faults import ALL_FAULTS, NETWORK_FAULTS
from ironbook.chaos.run import MUTATION_ENV, ChaosOptions, run_chaos

pytestmark = pytest.mark.slow

CI_DURATION_S = 60.0
CI_SEED = 7


def test_every_fault_kind_once_and_the_history_checks_out(tmp_path: Path) -> None:
    # Nine kinds in 60 s: shorter quiet gaps than the command's default.
    options = ChaosOptions(
        data_dir=tmp_path / "cluster",
        duration_s=CI_DURATION_S,
        seed=CI_SEED,
        quiet_s=(0.5, 1.5),
    )
    report = asyncio.run(run_chaos(options))
    assert report.verdict == "pass", (report.violations, report.errors)
    reason = unavailable_reason()
    if reason is None:
        assert set(report.faults) == set(ALL_FAULTS), report.faults
        assert report.network and not report.skipped
        run_id = re.search(r"\bibk([a-z0-9]{5})n1\b", report.network)
        assert run_id and run_id.group(1) not in leftover_names()  # torn down
    else:
        assert report.skipped == dict.fromkeys(NETWORK_FAULTS, reason)
        assert set(report.faults) == set(ALL_FAULTS) - set(NETWORK_FAULTS), report.faults
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.conserved and report.no_negative_balance
    assert report.replicas_agree and report.reads_consistent
    assert report.ok > 0 and report.reads > 0
    assert report.http_ops > 0  # gateway_kill brings clients going through the gateway
    assert report.projection_agrees  # and the gateway's history projection
    assert (tmp_path / "cluster" / "history.jsonl").stat().st_size > 0


def test_the_checker_catches_replies_sent_before_the_append_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mutated leader answers as soon as it decides. Killing the server
    # that leads the stream leaves appends unknown until the leader gives up
    # and steps down; the batches it had already answered for are then never
    # written (a plain leader kill rarely opens that window: the reply and the
    # append leave on the same connection, so it is there for contrast).
    monkeypatch.setenv(MUTATION_ENV, "reply_before_ack")
    options = ChaosOptions(
        data_dir=tmp_path / "cluster",
        duration_s=45.0,
        seed=CI_SEED,
        faults=("nats_leader_kill", "leader_kill", "nats_leader_kill"),
    )
    report = asyncio.run(run_chaos(options))
    assert report.mutation == "reply_before_ack"
    assert report.verdict == "fail"
    assert report.lost > 0, report.violations
    lost = [v for v in report.violations if v["kind"] == "lost"]
    assert lost and all(v["request_ids"] for v in lost)
