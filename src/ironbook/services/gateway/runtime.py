"""What one gateway worker holds: its settings, limiters, metrics and
connections (NATS, the batching ledger client, the idempotency claims, the
odds hub)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.client import BatchConfig, ClientConfig, LedgerClient
from ironbook.services.gateway.auth import (
    TokenVerifier,
    load_verifier,
)
from ironbook.services.gateway.idempotency import ClaimStore
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import OddsHub
from ironbook.services.gateway.settings import GatewaySettings
from ironbook.services.gateway.traffic import (
    Admission,
    IpFilter,
    TokenBuckets,
)

READINESS_DEADLINE_MS = 1_500
METRICS_FLUSH_MS = 1_000
"""How often a worker writes its request counts to the shared metrics files."""
READINESS_CACHE_MS = 500
"""A probe's answer is reused this long: `/readyz` is not rate limited (load
balancers poll it), so it must not turn into ledger load."""


@dataclass
class Gateway:
    """What a worker holds: settings, limiters and its ledger connection."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    verifier: TokenVerifier | None = None
    principal_buckets: TokenBuckets = field(init=False)
    ip_buckets: TokenBuckets = field(init=False)
    admission: Admission = field(init=False)
    ip_filter: IpFilter = field(init=False)
    nc: NatsClient | None = None
    ledger: LedgerClient | None = None
    probe: LedgerClient | None = None
    claims: ClaimStore | None = None
    odds: OddsHub | None = None
    readiness: tuple[float, bool, str] | None = None
    """(monotonic time, ready, detail) of the last readiness probe."""
    readiness_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _metrics_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.principal_buckets = TokenBuckets(
            *s.principal_rate_per_worker, max_keys=s.max_tracked_keys
        )
        self.ip_buckets = TokenBuckets(*s.ip_rate_per_worker, max_keys=s.max_tracked_keys)
        self.admission = Admission(s.max_inflight_ledger_requests)
        self.ip_filter = IpFilter(s.allow_cidrs, s.deny_cidrs)

    async def connect(self) -> None:
        s = self.settings
        self.verifier = load_verifier(
            algorithm=s.jwt_algorithm,
            secret_file=s.secret_file,
            public_key_file=s.jwt_public_key_file,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
        )
        self.nc = await connect_nats(s.nats_url, name=f"ironbook-gateway-{s.worker_id}")
        self.ledger = LedgerClient(
            self.nc,
            partitions=s.partitions,
            config=ClientConfig(deadline_ms=s.request_deadline_ms),
            batching=BatchConfig(max_inflight_batches=s.ledger_inflight_batches),
        )
        self.probe = LedgerClient(
            self.nc,
            partitions=s.partitions,
            config=ClientConfig(request_timeout_ms=500, deadline_ms=READINESS_DEADLINE_MS),
        )
        self.claims = await ClaimStore.open(self.nc.jetstream(), replicas=s.nats_replicas)
        self.odds = await OddsHub.open(self.nc, replicas=s.nats_replicas)
        self._metrics_task = asyncio.get_running_loop().create_task(self._flush_metrics())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_MS / 1000)
            self.metrics.flush(inflight_ledger_requests=self.admission.inflight)

    async def close(self) -> None:
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_task
            self.metrics.flush(inflight_ledger_requests=0)
        for client in (self.ledger, self.probe):
            if client is not None:
                await client.close()
        if self.nc is not None:
            await close_nats(self.nc)
