"""What one gateway worker holds, built complete by the composition root
(`ironbook.bootstrap`): its settings, limiters and metrics, its token
verifier, and the ports it talks to (the ledger, the readiness probe, the
Idempotency-Key claims, the history projectors, the odds hub, the token
revocations, the audit trail). Tests pass fakes for the ports."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ironbook import core
from ironbook.adapters.audit.trail import EventPage, EventQuery
from ironbook.services.gateway.auth import TokenVerifier
from ironbook.services.gateway.history import (
    ArchivedReply,
    ArchivedRequest,
    HistoryReply,
    HistoryRequest,
)
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import Odds
from ironbook.services.gateway.revocation import Revocations
from ironbook.services.gateway.traffic import (
    Admission,
    ConnectionCaps,
    ForwardedFor,
    IpFilter,
    MarketAdmission,
    TokenBuckets,
)
from ironbook.settings import GatewaySettings

READINESS_DEADLINE_MS = 1_500
METRICS_FLUSH_MS = 1_000
"""How often a worker writes its request counts to the shared metrics files."""
READINESS_CACHE_MS = 500
"""A probe's answer is reused this long: `/readyz` is not rate limited (load
balancers poll it), so it must not turn into ledger load. Each worker also
probes this often by itself (`calls.watch_partitions`)."""


@dataclass
class PartitionHealth:
    """Which partitions' ledger leaders answered the last readiness probe
    (or the last command a worker sent them). A partition that did not is
    `down`: commands routed to it are refused at once with 503
    `partition_unavailable` until a probe or a command hears it again, so
    they do not hold admission slots for a whole deadline while the other
    partitions keep serving."""

    down_since: dict[int, float] = field(default_factory=dict)
    """partition -> when it was first found silent (monotonic)."""

    def answered(self, partition: int) -> None:
        self.down_since.pop(partition, None)

    def silent(self, partition: int, now: float) -> None:
        self.down_since.setdefault(partition, now)

    def down_among(self, partitions: Sequence[int]) -> list[int]:
        return [partition for partition in partitions if partition in self.down_since]


class Ledger(Protocol):
    async def submit(self, command: core.AnyCommand | core.AnyQuery) -> core.Outcome: ...

    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome: ...


class Revoker(Protocol):
    async def revoke(self, jti: str, *, by: str) -> int:
        """Record the revocation for every worker; its time in Unix ms."""

    async def follow(self, revocations: Revocations, loaded: asyncio.Event) -> None:
        """Feed every revocation into `revocations` until cancelled; set
        `loaded` once those made before are in."""


class Claims(Protocol):
    async def claim(self, request_id: str, request_fingerprint: str) -> None:
        """Raises `KeyReused` or `ClaimUnavailable`."""


class History(Protocol):
    async def page(self, partition: int, request: HistoryRequest) -> HistoryReply:
        """Raises `HistoryUnavailable`."""

    async def archived(self, partition: int, request: ArchivedRequest) -> ArchivedReply:
        """An archived bet's or market's final view. Raises `HistoryUnavailable`."""


class AuditTrail(Protocol):
    async def receipt(self, partition: int, seq: int) -> bytes:
        """A log entry's receipt (JSON). Raises `NotYetCheckpointed` or `AuditUnavailable`."""

    async def events(self, query: EventQuery) -> EventPage:
        """A page of the significant-event log. Raises `AuditUnavailable`."""

    def note(self, kind: str, actor: str, reason: str, target: str, detail: str = "") -> None:
        """Record a significant event soon, without waiting."""

    async def record_events(self) -> None:
        """Write what was noted, until cancelled."""


@dataclass
class Gateway:
    settings: GatewaySettings
    partitions: int
    metrics: GatewayMetrics
    verifier: TokenVerifier
    ledger: Ledger
    probe: Ledger
    """A second client with a short deadline, for `/readyz`."""
    claims: Claims
    history: History
    odds: Odds
    revoker: Revoker
    audit: AuditTrail
    principal_buckets: TokenBuckets = field(init=False)
    ip_buckets: TokenBuckets = field(init=False)
    admission: Admission = field(init=False)
    market_admission: MarketAdmission = field(init=False)
    ip_filter: IpFilter = field(init=False)
    forwarded_for: ForwardedFor = field(init=False)
    ws_caps: ConnectionCaps = field(init=False)
    readiness: tuple[float, bool, str] | None = field(default=None, init=False)
    """(monotonic time, ready, detail) of the last readiness probe."""
    health: PartitionHealth = field(default_factory=PartitionHealth, init=False)
    readiness_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.principal_buckets = TokenBuckets(
            *s.principal_rate_per_worker, max_keys=s.max_tracked_keys
        )
        self.ip_buckets = TokenBuckets(*s.ip_rate_per_worker, max_keys=s.max_tracked_keys)
        self.admission = Admission(s.max_inflight_ledger_requests)
        self.market_admission = MarketAdmission(s.max_inflight_bets_per_market)
        self.ip_filter = IpFilter(s.allow_cidrs, s.deny_cidrs)
        self.forwarded_for = ForwardedFor(s.trusted_proxies)
        self.ws_caps = ConnectionCaps(s.ws_max_per_ip, s.ws_max_per_principal)

    async def follow_revocations(self, loaded: asyncio.Event) -> None:
        """Keep the verifier's revocations current, until cancelled."""
        await self.revoker.follow(self.verifier.revocations, loaded)

    async def flush_metrics(self) -> None:
        """Write this worker's counts to the shared metrics files, every
        `METRICS_FLUSH_MS` until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(METRICS_FLUSH_MS / 1000)
                self.metrics.flush(inflight_ledger_requests=self.admission.inflight)
        finally:
            self.metrics.flush(inflight_ledger_requests=0)
