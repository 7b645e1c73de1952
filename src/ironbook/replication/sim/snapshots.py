"""The simulated snapshot store (an object store in the log cluster)."""

from __future__ import annotations

from ironbook.replication.interfaces import Snapshot, SnapshotInfo, SnapshotUnavailable
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.network import CallTimeout, Network


class SnapshotService:
    def __init__(self) -> None:
        self.newest: Snapshot | None = None
        self.puts = 0

    def put(self, snapshot: Snapshot) -> None:
        self.puts += 1
        if self.newest is None or snapshot.seq > self.newest.seq:
            self.newest = snapshot


class SimSnapshotStore:
    """One host's view of the store (implements `interfaces.SnapshotStore`)."""

    def __init__(
        self, service: SnapshotService, network: Network, host: Host, *, request_timeout_ms: int
    ) -> None:
        self._service = service
        self._network = network
        self._host = host
        self._timeout_ms = request_timeout_ms

    async def put(self, snapshot: Snapshot) -> int:
        try:
            await self._network.call(
                self._host,
                "snapshots",
                lambda: self._service.put(snapshot),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown) as error:
            raise SnapshotUnavailable("put: no answer") from error
        return len(snapshot.state)

    async def latest(self) -> Snapshot | None:
        try:
            return await self._network.call(
                self._host, "snapshots", lambda: self._service.newest, timeout_ms=self._timeout_ms
            )
        except (CallTimeout, HostDown) as error:
            raise SnapshotUnavailable("latest: no answer") from error

    async def latest_info(self) -> SnapshotInfo | None:
        def info() -> SnapshotInfo | None:
            newest = self._service.newest
            return None if newest is None else SnapshotInfo(newest.seq, len(newest.state))

        try:
            return await self._network.call(
                self._host, "snapshots", info, timeout_ms=self._timeout_ms
            )
        except (CallTimeout, HostDown) as error:
            raise SnapshotUnavailable("latest_info: no answer") from error
