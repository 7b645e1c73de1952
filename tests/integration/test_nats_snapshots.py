"""The `SnapshotStore` contract against a real 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import hashlib
import os

import msgspec

from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.adapters.nats.snapshots import ZSTD_MARKER, NatsSnapshotStore, snapshot_bucket
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
            assert await store.put(small) > 100
            assert await store.latest() == small

            # Bigger than one object-store chunk (128 KiB): several chunks.
            big = _snapshot(2_000, 1_000_000)
            stored = await store.put(big)
            info = await store.latest_info()
            assert info is not None and info.seq == 2_000
            assert info.size_bytes == stored
            assert 1_000_000 <= info.size_bytes < 1_010_000  # random bytes do not compress
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


def test_snapshots_are_stored_compressed_in_big_chunks(nats_cluster: LocalNatsCluster) -> None:
    """A state compresses (ids repeat): the store holds, and counts, the
    compressed bytes, in chunks of up to 1 MB instead of the object store's
    128 KiB, and reads back the same snapshot."""

    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.url)
        try:
            store = await NatsSnapshotStore.open(nc, 7, keep=2)
            state = b"".join(b"acct-%06d:bet-%09d;" % (i % 10_000, i) for i in range(400_000))
            snapshot = Snapshot(seq=5, state_hash=hashlib.sha256(state).hexdigest(), state=state)
            stored = await store.put(snapshot)
            assert stored < len(state) // 3, (stored, len(state))
            info = await store.latest_info()
            assert info is not None and info.size_bytes == stored
            assert await store.latest() == snapshot
            objects = await nc.jetstream().object_store(snapshot_bucket(7))
            (raw_info,) = [i for i in await objects.list() if i.name == f"snapshot-{5:020d}"]
            assert raw_info.chunks == -(-stored // 1_000_000)
        finally:
            await nc.close()

    asyncio.run(scenario())


def test_a_snapshot_written_before_compression_still_restores(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.url)
        try:
            store = await NatsSnapshotStore.open(nc, 8, keep=2)
            old = _snapshot(42, 300_000)
            objects = await nc.jetstream().object_store(snapshot_bucket(8))
            await objects.put(f"snapshot-{42:020d}", msgspec.msgpack.encode(old))
            assert await store.latest() == old
            newer = _snapshot(43, 1_000)
            await store.put(newer)
            assert await store.latest() == newer
        finally:
            await nc.close()

    asyncio.run(scenario())


def test_an_object_that_cannot_be_decoded_is_passed_over(nats_cluster: LocalNatsCluster) -> None:
    """A newer object this version cannot decode (damaged, or from a newer
    version) must not stop a replica from starting: the next older one is used."""

    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.url)
        try:
            store = await NatsSnapshotStore.open(nc, 9, keep=3)
            good = _snapshot(50, 2_000)
            await store.put(good)
            objects = await nc.jetstream().object_store(snapshot_bucket(9))
            await objects.put(f"snapshot-{51:020d}", ZSTD_MARKER + b"not zstd at all")
            await objects.put(f"snapshot-{52:020d}", b"\x84not msgpack either")
            assert await store.latest() == good
        finally:
            await nc.close()

    asyncio.run(scenario())
