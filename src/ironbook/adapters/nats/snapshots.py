"""`SnapshotStore` on a JetStream object store (R3), one bucket per partition.

Each snapshot is its own object, named by its zero-padded log sequence, so
names sort by position and a half-written newer snapshot never hides a good
older one (an object becomes visible only when its meta message lands, after
all its chunks). The store keeps the newest `keep` snapshots and deletes the
rest. The object store checks a SHA-256 digest on every read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectInfo, StorageType
from nats.js.object_store import ObjectStore

from ironbook.adapters.nats.provision import with_placement_retry
from ironbook.replication.interfaces import Snapshot, SnapshotInfo, SnapshotUnavailable

log = logging.getLogger(__name__)

DEFAULT_KEEP = 2
DEFAULT_TIMEOUT_MS = 5_000
T = TypeVar("T")
_NAME_PREFIX = "snapshot-"


def snapshot_bucket(partition: int) -> str:
    return f"ironbook_snapshots_{partition}"


def _object_name(seq: int) -> str:
    return f"{_NAME_PREFIX}{seq:020d}"


class NatsSnapshotStore:
    """Every call is bounded by `timeout_ms` and fails as `SnapshotUnavailable`:
    the object store client can otherwise wait forever (an empty bucket's
    listing, a lost reply), and a replica must never hang in its restore."""

    def __init__(
        self, store: ObjectStore, *, keep: int = DEFAULT_KEEP, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> None:
        assert keep >= 1
        self._store = store
        self._keep = keep
        self._timeout_s = timeout_ms / 1000

    @classmethod
    async def open(
        cls, nc: NatsClient, partition: int, *, replicas: int = 3, keep: int = DEFAULT_KEEP
    ) -> NatsSnapshotStore:
        js = nc.jetstream()
        bucket = snapshot_bucket(partition)
        store = await with_placement_retry(
            f"object store {bucket}",
            lambda: js.create_object_store(bucket, replicas=replicas, storage=StorageType.FILE),
        )
        return cls(store, keep=keep)

    async def put(self, snapshot: Snapshot) -> None:
        data = msgspec.msgpack.encode(snapshot)
        # Uploads scale with the state: allow a second per 8 MB on top.
        timeout_s = self._timeout_s + len(data) / 8_000_000
        await self._bounded("put", self._put(_object_name(snapshot.seq), data), timeout_s)

    async def _put(self, name: str, data: bytes) -> None:
        await self._store.put(name, data)
        await self._prune()

    async def latest(self) -> Snapshot | None:
        return await self._bounded("latest", self._latest(), self._timeout_s * 4)

    async def latest_info(self) -> SnapshotInfo | None:
        """From the bucket's metadata, not the objects."""
        infos = await self._bounded("latest_info", self._infos(), self._timeout_s)
        if not infos:
            return None
        newest = infos[-1]
        return SnapshotInfo(int(newest.name[len(_NAME_PREFIX) :]), newest.size or 0)

    async def _bounded(self, what: str, call: Coroutine[Any, Any, T], timeout_s: float) -> T:
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except TimeoutError as err:
            raise SnapshotUnavailable(f"snapshot {what}: no answer in {timeout_s:.1f} s") from err
        except (nats.errors.Error, OSError) as err:
            raise SnapshotUnavailable(f"snapshot {what}: {err!r}") from err

    async def _latest(self) -> Snapshot | None:
        for name in reversed(await self._names()):
            try:
                result = await self._store.get(name)
            except nats.js.errors.NotFoundError:
                continue  # pruned between the listing and the read
            if result.data is None:
                continue
            return msgspec.msgpack.decode(result.data, type=Snapshot)
        return None

    async def _names(self) -> list[str]:
        return [info.name for info in await self._infos()]

    async def _infos(self) -> list[ObjectInfo]:
        """The snapshots' object infos, oldest first."""
        try:
            infos = await self._store.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            return []
        snapshots = [info for info in infos if info.name and info.name.startswith(_NAME_PREFIX)]
        return sorted(snapshots, key=lambda info: info.name)

    async def _prune(self) -> None:
        names = await self._names()
        for name in names[: -self._keep]:
            try:
                await self._store.delete(name)
            except nats.js.errors.NotFoundError:
                continue
