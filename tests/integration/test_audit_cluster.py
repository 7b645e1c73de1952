"""The audit trail of a real cluster across leader changes: the leaders'
checkpoints chain into one verifiable history, the independent verifier
finds nothing wrong, and the significant-event log names every leader."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import time
import urllib.request

from ironbook.adapters.audit.checkpoint_stream import read_checkpoint_stream
from ironbook.adapters.audit.events import SignificantEvent, decode_event
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.chaos.workload import Workload
from ironbook.cli import main
from ironbook.client import ClientConfig, connect_ledger
from ironbook.core import acting
from ironbook.services.local_cluster import LocalCluster, wait_for_leaders

SETTLE_S = 60.0


async def _events(endpoint: NatsEndpoint) -> list[SignificantEvent]:
    nc = await endpoint.connect("test-audit-events")
    try:
        log = AuditedLog(nc, "events")
        return [decode_event(e.payload) async for e in read_log(log, 1, await log.last_seq())]
    finally:
        await close_nats(nc)


def _verifier_metrics(cluster: LocalCluster) -> str:
    text = (cluster.data_dir / "logs" / "audit-verifier.log").read_text()
    found = re.search(r"serving audit metrics on (http://\S+/metrics)", text)
    assert found is not None, text
    with urllib.request.urlopen(found.group(1), timeout=5) as response:
        return str(response.read().decode())


def test_checkpoints_chain_across_killed_leaders_and_verify(cluster: LocalCluster) -> None:
    elected: list[str] = []

    async def scenario() -> None:
        client = await connect_ledger(
            cluster.ops,
            config=ClientConfig(request_timeout_ms=1_000, deadline_ms=60_000),
            issuer=acting("test"),
        )
        try:
            workload = Workload(client)
            await workload.setup()
            async with asyncio.TaskGroup() as group:
                group.create_task(workload.run(12.0))
                for _ in range(2):
                    await asyncio.sleep(2.0)
                    leader = (await wait_for_leaders(cluster.ops, 1))[0]
                    os.kill(leader.pid, signal.SIGKILL)
                    new = await wait_for_leaders(
                        cluster.ops, 1, not_node=leader.node_id, timeout_ms=30_000
                    )
                    elected.append(new[0].node_id)
            assert workload.accepted > 0
        finally:
            await client.close()

    asyncio.run(scenario())

    # Every entry is checkpointed within about a second of the last write.
    deadline = time.monotonic() + SETTLE_S
    while main(["audit", "verify", "--data-dir", str(cluster.data_dir), "--strict"]) != 0:
        assert time.monotonic() < deadline, "the live cluster does not verify"
        time.sleep(1.0)

    async def chain() -> list[tuple[int | str, int, int]]:
        nc = await cluster.ops.connect("test-audit-chain")
        try:
            checkpoints = await read_checkpoint_stream(nc)
        finally:
            await close_nats(nc)
        return [(cp.partition, cp.previous_size, cp.tree_size) for cp in checkpoints]

    partition_chain = [link for link in asyncio.run(chain()) if link[0] == 0]
    assert len(partition_chain) >= 3

    leaders = [e for e in asyncio.run(_events(cluster.ops)) if e.kind == "leader_elected"]
    assert len(leaders) >= 3  # the first leader and the two after each kill
    assert set(elected) <= {e.actor for e in leaders}
    assert all(e.target == "partition 0" for e in leaders)

    deadline = time.monotonic() + SETTLE_S
    while True:
        metrics = _verifier_metrics(cluster)
        verified = re.search(r'ironbook_audit_verified_tree_size\{log="0"\} (\S+)', metrics)
        if verified and float(verified.group(1)) >= partition_chain[-1][2]:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(1.0)
    assert "ironbook_audit_verify_failures_total{" not in metrics

    # The busiest account's balance history, rebuilt from the log alone.
    history = cluster.data_dir / "punter-0.jsonl"
    data_dir = ["--data-dir", str(cluster.data_dir)]
    assert main(["audit", "reconstruct", "punter-0", *data_dir, "--out", str(history)]) == 0
    assert len(history.read_text().splitlines()) > 1
    assert main(["audit", "reconstruct", "nobody", *data_dir]) == 2

    # The regulator's report: every row placed in the log and covered by a checkpoint.
    window = ["--from", "2000-01-01", "--to", "2100-01-01"]
    report = cluster.data_dir / "report"
    assert main(["audit", "report", *window, "--format", "csv", "--out", str(report),
                 *data_dir]) == 0  # fmt: skip
    with (report / "bets.csv").open() as handle:
        bets = list(csv.DictReader(handle))
    assert bets and all(row["checkpoint_size"] for row in bets)
    with (report / "events.csv").open() as handle:
        kinds = {row["kind"] for row in csv.DictReader(handle)}
    assert {"leader_elected", "deposit"} <= kinds
    mine = cluster.data_dir / "report-punter-0"
    assert main(["audit", "report", *window, "--account", "punter-0", "--out", str(mine),
                 *data_dir]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (mine / "transactions.jsonl").read_text().splitlines()]
    rebuilt = [json.loads(line) for line in history.read_text().splitlines()]
    assert [row["balance_minor"] for row in rows] == [row["balance_minor"] for row in rebuilt]
