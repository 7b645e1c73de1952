"""The replicated ledger under real faults: a real 3-node JetStream cluster and
3 replica processes in a temp dir, clients placing bets and moving money
while a leader is killed, a stream-leading NATS server is killed, or a leader
is frozen past its lease and woken. Afterwards the history checker must find
every acknowledged request in the log exactly once, every rejection without
effect, the invariants holding at every log position, and every replica at
the same state hash.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ironbook.adapters.nats.log import stream_name
from ironbook.chaos.workload import Workload
from ironbook.client import ClientConfig, LedgerClient, connect_ledger
from ironbook.core import acting
from ironbook.replication.checker import check_history
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import LocalCluster, wait_for_leaders


async def _connect(cluster: LocalCluster) -> LedgerClient:
    return await connect_ledger(
        cluster.ops,
        config=ClientConfig(
            request_timeout_ms=1_000, deadline_ms=60_000, backoff_initial_ms=20, backoff_max_ms=300
        ),
        issuer=acting("test"),
    )


async def _verify(cluster: LocalCluster, workload: Workload) -> None:
    nc = await cluster.ops.connect("test-verify")
    try:
        hashes = await converged_hashes(nc, 0, cluster.replica_ids(0), timeout_ms=90_000)
        entries = await read_whole_log(nc, 0)
    finally:
        await nc.close()
    report = check_history(workload.recorder.operations, entries, hashes)
    assert report.verdict == "pass", "\n".join(map(str, report.violations))
    assert len(set(hashes.values())) == 1
    assert workload.gave_up == [], f"clients saw errors: {workload.gave_up[:5]}"
    assert workload.accepted > 0


async def _run_with_fault(
    cluster: LocalCluster, fault: object, *, seconds: float = 8.0
) -> Workload:
    client = await _connect(cluster)
    try:
        workload = Workload(client)
        await workload.setup()
        load = asyncio.create_task(workload.run(seconds))
        await asyncio.sleep(2.0)
        assert callable(fault)
        await fault()
        await load
    finally:
        await client.close()
    return workload


def test_kill_leader_replica_another_leads_and_the_dead_catches_up(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        leaders = await wait_for_leaders(cluster.ops, 1)
        victim = leaders[0].node_id

        async def fault() -> None:
            cluster.replicas[victim].kill()
            new = await wait_for_leaders(cluster.ops, 1, not_node=victim, timeout_ms=30_000)
            assert new[0].node_id != victim
            cluster.replicas[victim].start()

        workload = await _run_with_fault(cluster, fault)
        await _verify(cluster, workload)

    asyncio.run(scenario())


def test_kill_the_nats_server_leading_the_stream(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async def fault() -> None:
            node = cluster.nats.stream_leader(stream_name(0))
            assert node is not None
            cluster.nats.kill_node(node)
            await asyncio.sleep(3.0)
            cluster.nats.start_node(node, wait=False)

        workload = await _run_with_fault(cluster, fault, seconds=14.0)
        await asyncio.to_thread(cluster.nats.wait_healthy, 60_000)
        await _verify(cluster, workload)

    asyncio.run(scenario())


def test_frozen_leader_is_fenced_when_it_wakes(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        leaders = await wait_for_leaders(cluster.ops, 1)
        victim = leaders[0].node_id

        async def fault() -> None:
            process = cluster.replicas[victim]
            process.pause()
            try:
                # Frozen well past its 1 s lease: another replica takes over.
                new = await wait_for_leaders(cluster.ops, 1, not_node=victim, timeout_ms=30_000)
                assert new[0].node_id != victim
                await asyncio.sleep(1.0)
            finally:
                process.resume()

        workload = await _run_with_fault(cluster, fault, seconds=10.0)
        await _verify(cluster, workload)

    asyncio.run(scenario())


def test_full_restart_resumes_with_the_same_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"

    async def write_and_hash(cluster: LocalCluster) -> tuple[Workload, dict[str, str]]:
        client = await _connect(cluster)
        try:
            workload = Workload(client)
            await workload.setup()
            await workload.run(3.0, clients=8)
        finally:
            await client.close()
        nc = await cluster.ops.connect("test")
        try:
            hashes = await converged_hashes(nc, 0, cluster.replica_ids(0))
        finally:
            await nc.close()
        return workload, hashes

    async def rehash(cluster: LocalCluster) -> dict[str, str]:
        await cluster.wait_leaders(timeout_ms=90_000)
        nc = await cluster.ops.connect("test")
        try:
            return await converged_hashes(nc, 0, cluster.replica_ids(0))
        finally:
            await nc.close()

    first = LocalCluster(data_dir)
    try:
        first.start()
        asyncio.run(first.wait_leaders(timeout_ms=90_000))
        workload, before = asyncio.run(write_and_hash(first))
    finally:
        first.stop()
    second = LocalCluster(data_dir)
    try:
        second.start()
        after = asyncio.run(rehash(second))
    finally:
        second.stop()
    assert workload.accepted > 0
    assert set(before.values()) == set(after.values())
    assert len(set(after.values())) == 1
