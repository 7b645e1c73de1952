"""Chaos in CI: a real local cluster under the workload and a fixed-seed
fault schedule that injects every implemented fault kind (the network ones,
`partition` and `latency`, with each node in its own network namespace;
skipped with the reason where namespaces cannot be made), then the history
checker's verdict. And the other direction: with a deliberately broken
replica (the TEST-ONLY `reply_before_ack` mutation) the checker must fail
the run with acknowledged operations lost, and the run must explain itself
(failure.md and the evidence kept); a workload client that raises must fail
the run with the error named.

Slow (minutes on a busy 2-core machine) and timing-free: nothing asserts how
long anything took, only what the checker concluded.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ironbook.adapters.netns import leftover_names, unavailable_reason
from ironbook.chaos.evidence import FAILURE_FILE, FAULTS_FILE
from ironbook.chaos.faults import ALL_FAULTS, NETWORK_FAULTS
from ironbook.chaos.history import HISTORY_FILE, HistoryRecorder
from ironbook.chaos.run import REPORT_FILE, ChaosOptions, run_chaos
from ironbook.chaos.workload import Workload, WorkloadConfig
from ironbook.client import LedgerClient

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
    check = report.check
    assert check is not None
    assert report.verdict == "pass", (check.violations, report.errors)
    assert report.evidence_dir is None
    reason = unavailable_reason()
    if reason is None:
        assert set(report.faults) == set(ALL_FAULTS), report.faults
        assert report.network and not report.skipped
        run_id = re.search(r"\bibk([a-z0-9]{5})n1\b", report.network)
        assert run_id and run_id.group(1) not in leftover_names()  # torn down
    else:
        assert report.skipped == dict.fromkeys(NETWORK_FAULTS, reason)
        assert set(report.faults) == set(ALL_FAULTS) - set(NETWORK_FAULTS), report.faults
    assert check.lost == 0
    assert check.duplicated == 0
    assert check.conserved and check.no_negative_balance
    assert check.replicas_agree and check.reads_consistent
    assert check.ok > 0 and check.reads > 0
    assert report.http_ops > 0  # gateway_kill brings clients going through the gateway
    assert check.projection_agrees  # and the gateway's history projection
    assert (tmp_path / "cluster" / "history.jsonl").stat().st_size > 0
    # The audit trail held across the leader changes: every log verifies and
    # every leader heard is in the significant-event log.
    audit = report.audit
    assert audit is not None and audit.verdict == "pass", audit
    assert {"0", "events"} <= set(audit.logs) and all(a.passed for a in audit.logs.values())
    assert audit.leaders_seen >= 2 and audit.leaders_recorded == audit.leaders_seen


def test_the_checker_catches_replies_sent_before_the_append_is_durable(tmp_path: Path) -> None:
    # The mutated leader answers as soon as it decides. Killing the server
    # that leads the stream leaves appends unknown until the leader gives up
    # and steps down; the batches it had already answered for are then never
    # written (a plain leader kill rarely opens that window: the reply and the
    # append leave on the same connection, so it is there for contrast).
    keep = tmp_path / "chaos-failures"
    options = ChaosOptions(
        data_dir=tmp_path / "cluster",
        duration_s=45.0,
        seed=CI_SEED,
        faults=("nats_leader_kill", "leader_kill", "nats_leader_kill"),
        keep_dir=keep,
        test_mutation="reply_before_ack",
    )
    report = asyncio.run(run_chaos(options))
    assert report.mutation == "reply_before_ack"
    assert report.verdict == "fail"
    assert report.check is not None
    assert report.check.lost > 0, report.check.violations
    lost = [v for v in report.check.violations if v.kind == "lost"]
    assert lost and all(v.request_ids for v in lost)
    # The run explains itself, in its data directory and in the evidence kept.
    assert report.evidence_dir is not None
    evidence = Path(report.evidence_dir)
    assert evidence.parent == keep.resolve()
    assert evidence.name.startswith(f"{CI_SEED}-")
    for name in (FAILURE_FILE, FAULTS_FILE, HISTORY_FILE, REPORT_FILE):
        assert (evidence / name).stat().st_size > 0, name
    assert list((evidence / "logs").glob("*.log")), "the replicas' logs"
    failure = (evidence / FAILURE_FILE).read_text()
    assert failure == (tmp_path / "cluster" / FAILURE_FILE).read_text()
    assert "## 1. lost" in failure
    for violation in lost:
        assert all(request_id in failure for request_id in violation.request_ids)
    # The faults around the lost operations: the stream leader's kill opens the window.
    assert "Faults active within 10 s:" in failure
    assert "nats_leader_kill" in failure.split("## Fault timeline")[0]
    assert "--test-mutation reply_before_ack" in failure
    assert f"--seed {CI_SEED}" in failure


class RaisingClient:
    """The run's client, until `after` commands have been sent: then it raises."""

    def __init__(self, client: LedgerClient, after: int) -> None:
        self._client = client
        self._left = after

    async def submit(self, command: object) -> object:
        self._left -= 1
        if self._left < 0:
            raise RuntimeError("injected client failure")
        return await self._client.submit(command)  # type: ignore[arg-type]


def test_a_workload_client_that_raises_fails_the_run_and_names_the_error(
    tmp_path: Path,
) -> None:
    def raising_workload(
        client: LedgerClient, recorder: HistoryRecorder, config: WorkloadConfig
    ) -> Workload:
        # Past the setup (a market, 40 accounts opened and funded): mid-load.
        return Workload(RaisingClient(client, after=300), recorder, config)  # type: ignore[arg-type]

    options = ChaosOptions(
        data_dir=tmp_path / "cluster",
        duration_s=40.0,
        seed=CI_SEED,
        faults=("follower_kill",),
        clients=4,
        keep_dir=tmp_path / "kept",
        workload=raising_workload,
    )
    report = asyncio.run(run_chaos(options))
    assert report.verdict == "fail"
    assert "the load failed: RuntimeError: injected client failure" in report.errors
    # The history up to the failure is still judged, and passes: the run
    # fails because its load did, not because the ledger did.
    assert report.check is not None and report.check.verdict == "pass"
    assert report.evidence_dir is not None
    failure = (Path(report.evidence_dir) / FAILURE_FILE).read_text()
    assert "injected client failure" in failure
    assert "## The end of each process's log" in failure
