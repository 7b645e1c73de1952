"""The local JetStream cluster launcher: config, health, faults, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster


def test_every_node_fsyncs_always_and_listens_on_loopback(
    nats_cluster: LocalNatsCluster,
) -> None:
    assert len(nats_cluster.running_nodes()) == 3
    for node in nats_cluster.nodes.values():
        status, varz = node.monitor("/varz")
        assert status == 200
        assert varz["jetstream"]["config"]["sync_always"] is True
        assert varz["host"] == "127.0.0.1"
        assert varz["cluster"]["addr"] == "127.0.0.1"
        assert str(node.node_dir) in varz["jetstream"]["config"]["store_dir"]
    assert nats_cluster.meta_leader() in nats_cluster.nodes


def test_a_paused_node_is_resumed_and_a_stopped_node_restarts(
    nats_cluster: LocalNatsCluster,
) -> None:
    node = nats_cluster.node("n2")
    nats_cluster.pause_node("n2")
    assert node.process.is_running()
    assert not node.healthy()
    nats_cluster.resume_node("n2")
    nats_cluster.wait_node_healthy("n2")

    nats_cluster.stop_node("n2")
    assert node.process.returncode() == 0
    nats_cluster.start_node("n2")
    assert node.healthy()


def test_a_cluster_restarted_from_its_data_dir_keeps_its_ports_and_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"

    async def write() -> None:
        nc = await connect_nats(first.url)
        try:
            ledger = await NatsLog.open(nc, 0)
            for seq in range(1, 21):
                await ledger.append(b"x" * seq, expected_last_seq=seq - 1, batch_id=f"t1-{seq}")
        finally:
            await nc.close()

    async def read() -> list[int]:
        nc = await connect_nats(second.url)
        try:
            ledger = NatsLog(nc, 0)
            assert await ledger.last_seq() == 20
            entries = []
            while len(entries) < 20:
                got = await ledger.read(len(entries) + 1, max_entries=100, wait_ms=10_000)
                assert got, "no entries within 10 s"
                entries.extend(got)
            return [len(e.payload) for e in entries]
        finally:
            await nc.close()

    with LocalNatsCluster(data_dir) as first:
        first.start(timeout_ms=60_000)
        asyncio.run(write())
        urls = first.urls
    with LocalNatsCluster(data_dir) as second:
        assert second.urls == urls
        second.start(timeout_ms=60_000)
        # The restarted nodes elect the stream's leader again from its Raft log.
        second.wait_stream_leader("LEDGER_0", timeout_ms=60_000)
        assert asyncio.run(read()) == list(range(1, 21))
