"""The `SnapshotStore` contract against a real 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import hashlib
import os

from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.adapters.nats.snapshots import NatsSnapshotStore
from ironbook.replication.interfaces import Snapshot


def _snapshot(seq: int, size: int) -> Snapshot:
    state = os.urandom(size)
    return Snapshot(seq=seq, state_hash=hashlib.sha256(state).hexdigest(), state=state)


def test_snapshot_roundtrip_keeps_the_newest(nats_cluster: LocalNatsCluster) -> None:
    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.url)
        try:
            store = await NatsSnapshotStore.open(nc, 0, keep=2)
            assert await store.latest() is None
            assert await store.latest_info() is None

            small = _snapshot(10, 100)
            await store.put(small)
            assert await store.latest() == small

            # Bigger than one object-store chunk (128 KiB): several chunks.
            big = _snapshot(2_000, 1_000_000)
            await store.put(big)
            info = await store.latest_info()
            assert info is not None and info.seq == 2_000
            assert 1_000_000 <= info.size_bytes < 1_010_000
            newer = _snapshot(3_000, 5_000)
            await store.put(newer)
            assert await store.latest() == newer

            # Another replica (another connection) restores the same bytes.
            other_nc = await connect_nats(nats_cluster.url)
            try:
                other = await NatsSnapshotStore.open(other_nc, 0, keep=2)
                restored = await other.latest()
                assert restored is not None
                assert restored.seq == 3_000
                assert hashlib.sha256(restored.state).hexdigest() == restored.state_hash
            finally:
                await other_nc.close()
        finally:
            await nc.close()

    asyncio.run(scenario())
