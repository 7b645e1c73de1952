"""The simulated lease: a key in a replicated KV store with a TTL, kept by the
store's clock. Like a JetStream KV key, every write (take, renew, release)
gets a new, higher revision, so the revision at acquisition is a term."""

from __future__ import annotations

from collections.abc import Callable

from ironbook.replication.interfaces import LeaseUnavailable
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.network import CallTimeout, Network


class LeaseService:
    def __init__(self, *, now_ms: Callable[[], int], ttl_ms: int) -> None:
        self._now_ms = now_ms
        self._ttl_ms = ttl_ms
        self.holder: str | None = None
        self.revision = 0
        self._expires_ms = 0
        self.grants = 0
        self.trace: Callable[[str], None] | None = None

    def _held(self) -> bool:
        return self.holder is not None and self._now_ms() < self._expires_ms

    def acquire(self, holder: str) -> int | None:
        if self._held():
            return None
        self.revision += 1
        self.holder = holder
        self._expires_ms = self._now_ms() + self._ttl_ms
        self.grants += 1
        if self.trace is not None:
            self.trace(f"lease: granted to {holder}, term {self.revision}")
        return self.revision

    def renew(self, holder: str, revision: int) -> int | None:
        # A revision older than the current one is still ours if we hold the
        # lease: a renewal whose acknowledgement was lost landed (as the NATS
        # adapter recognises by reading the newest message back).
        if not self._held() or self.holder != holder or revision > self.revision:
            return None
        self.revision += 1
        self._expires_ms = self._now_ms() + self._ttl_ms
        return self.revision

    def release(self, holder: str, revision: int) -> None:
        if self._held() and self.holder == holder and self.revision == revision:
            self.revision += 1
            self.holder = None
            if self.trace is not None:
                self.trace(f"lease: released by {holder}")

    def expire_now(self) -> None:
        """Fault: the lease lapses while its holder still believes it leads
        (a clock jump on the store, or a holder that paused past its TTL)."""
        self._expires_ms = self._now_ms()


class SimLease:
    """One host's view of the lease (implements `interfaces.Lease`)."""

    def __init__(
        self, service: LeaseService, network: Network, host: Host, *, request_timeout_ms: int
    ) -> None:
        self._service = service
        self._network = network
        self._host = host
        self._timeout_ms = request_timeout_ms

    async def acquire(self, holder: str) -> int | None:
        try:
            return await self._network.call(
                self._host,
                "lease",
                lambda: self._service.acquire(holder),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown) as error:
            raise LeaseUnavailable("acquire: no answer") from error

    async def renew(self, holder: str, revision: int) -> int | None:
        try:
            return await self._network.call(
                self._host,
                "lease",
                lambda: self._service.renew(holder, revision),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown) as error:
            raise LeaseUnavailable("renew: no answer") from error

    async def release(self, holder: str, revision: int) -> None:
        try:
            await self._network.call(
                self._host,
                "lease",
                lambda: self._service.release(holder, revision),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown):
            return
