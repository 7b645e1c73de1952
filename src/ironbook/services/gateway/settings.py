"""The gateway's settings: one typed object, from flags and `IRONBOOK_*` env.

Rate limits are for the whole gateway on one host: it runs as `worker_count`
workers behind one port (SO_REUSEPORT) that share no state, so each worker
enforces its share, the configured rate and burst divided by `worker_count`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "IRONBOOK_GATEWAY_"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    nats_url: str = "nats://127.0.0.1:4222"
    partitions: int = 1
    data_dir: Path = Path(".ironbook")
    host: str = "127.0.0.1"
    port: int = 8080
    worker_id: str = "w0"
    nats_replicas: int = 3
    """Replicas of the JetStream bucket holding Idempotency-Key fingerprints."""

    jwt_algorithm: str = "HS256"
    """HS256 with the local secret, or RS256 / ES256 with `jwt_public_key_file`."""
    jwt_public_key_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    principal_rate_per_s: float = 200.0
    principal_burst: int = 400
    ip_rate_per_s: float = 500.0
    ip_burst: int = 1_000
    worker_count: int = 1
    """Workers sharing this host's port. The four limits above are for them
    all: each worker takes 1/`worker_count` of each (burst at least 1). The
    kernel spreads connections, not requests, evenly over the workers, so a
    client on one keep-alive connection gets one worker's share: the limits
    err on the strict side, never N times too loose."""
    max_tracked_keys: int = 100_000
    """Token buckets kept per worker (least recently used are dropped)."""
    max_inflight_ledger_requests: int = 2_000
    """Per worker; beyond it requests are shed at once with 503 `overloaded`."""
    max_body_bytes: int = 64 * 1024
    request_deadline_ms: int = 10_000
    ledger_inflight_batches: int = 4
    """Batch requests per partition in flight from one worker. Under load
    every slot is busy and the requests waiting meanwhile travel together, so
    fewer slots mean bigger batches: fewer NATS messages and less work per
    bet in the gateway, NATS and the leader. At low load a request finds a
    free slot and goes at once. 4 (was 16): batches of 8+ bets instead of ~2
    with 32 concurrent requests per worker (docs/api.md, Measured)."""
    allow_cidrs: tuple[str, ...] = ()
    """Empty: every address not denied may connect."""
    deny_cidrs: tuple[str, ...] = ()
    trust_forwarded_for: bool = False
    """Take the client address from X-Forwarded-For (behind HAProxy / nginx only)."""
    currency: str = "GBP"

    @property
    def principal_rate_per_worker(self) -> tuple[float, int]:
        """(rate per second, burst) that one worker enforces per principal."""
        return self._share(self.principal_rate_per_s, self.principal_burst)

    @property
    def ip_rate_per_worker(self) -> tuple[float, int]:
        """(rate per second, burst) that one worker enforces per address."""
        return self._share(self.ip_rate_per_s, self.ip_burst)

    def _share(self, rate_per_s: float, burst: int) -> tuple[float, int]:
        if self.worker_count < 1:
            raise ValueError("worker_count must be at least 1")
        return rate_per_s / self.worker_count, max(1, burst // self.worker_count)

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "gateway" / "jwt-hs256.secret"

    def with_env(self, environ: dict[str, str] | None = None) -> GatewaySettings:
        """These settings overridden by `IRONBOOK_GATEWAY_<FIELD>` variables."""
        environ = dict(os.environ) if environ is None else environ
        changes: dict[str, Any] = {}
        for item in fields(self):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is None:
                continue
            current = getattr(self, item.name)
            changes[item.name] = _convert(item.name, raw, current)
        return dataclasses.replace(self, **changes)


def _convert(name: str, raw: str, current: object) -> object:
    if isinstance(current, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if name in ("data_dir", "jwt_public_key_file"):
        return Path(raw)
    return raw
