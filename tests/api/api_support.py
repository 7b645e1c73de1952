"""Helpers for the API tests: the `Api` handle (URLs, token minting), the
`World` (accounts and a market made over HTTP), and the cluster launcher the
session fixture uses."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ironbook.adapters.nats.localproc import ManagedProcess, PortLease
from ironbook.services.gateway.auth import SigningKey, local_signing_key, mint_token
from ironbook.services.local_cluster import GatewayOptions, LocalCluster
from ironbook.services.process import process_command

START_TIMEOUT_S = 90
GENEROUS_LIMITS = {
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "100000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "100000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "100000",
    "IRONBOOK_GATEWAY_IP_BURST": "100000",
}
THROTTLED_RATE_PER_S = 5
THROTTLED_BURST = 5
TIGHT_INFLIGHT = 2


@dataclass
class Api:
    url: str
    throttled_url: str
    """One worker allowing 5 requests/s per principal (burst 5)."""
    tight_url: str
    """One worker admitting only 2 ledger requests in flight."""
    tight_worker: ManagedProcess
    """The process behind `tight_url` (the overload test pauses it)."""
    data_dir: Path
    secret: SigningKey
    cluster: LocalCluster
    extra_workers: list[ManagedProcess]
    """Every worker not behind `url`: the throttled and the tight one."""

    def token(
        self,
        role: str,
        account_id: str | None = None,
        sub: str | None = None,
        ttl_s: int | None = None,
    ) -> str:
        return mint_token(self.secret, role=role, account_id=account_id, sub=sub, ttl_s=ttl_s)

    @property
    def metrics_url(self) -> str:
        url = self.cluster.gateway_metrics_url
        assert url is not None
        return url

    def auth(
        self,
        role: str,
        account_id: str | None = None,
        *,
        sub: str | None = None,
        key: str | None = None,
    ) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(role, account_id, sub)}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20)


def _wait_ready(url: str, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as err:
            last = repr(err)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready: {last}")


def extra_worker(
    cluster: LocalCluster, name: str, port: int, metrics_port: int, env: dict[str, str]
) -> ManagedProcess:
    """A gateway worker on a port of its own (not started)."""
    return ManagedProcess(
        name,
        [
            *process_command("gateway", []),
            "--nats",
            cluster.nats_url,
            "--port",
            str(port),
            "--data-dir",
            str(cluster.data_dir),
            "--worker-id",
            name,
            "--metrics-port",
            str(metrics_port),
        ],
        log_path=cluster.data_dir / "logs" / f"{name}.log",
        env={**cluster.child_env, **env},
    )


@contextlib.contextmanager
def running_api(data_dir: Path) -> Iterator[Api]:
    ports = PortLease()
    main_port, throttled_port, tight_port, *metrics_ports = ports.take(5)
    cluster = LocalCluster(
        data_dir, gateway=GatewayOptions(port=main_port, workers=2, env=GENEROUS_LIMITS)
    )
    extras = [
        extra_worker(
            cluster,
            "gw-throttled",
            throttled_port,
            metrics_ports[0],
            {
                "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": str(THROTTLED_RATE_PER_S),
                "IRONBOOK_GATEWAY_PRINCIPAL_BURST": str(THROTTLED_BURST),
            },
        ),
        extra_worker(
            cluster,
            "gw-tight",
            tight_port,
            metrics_ports[1],
            {**GENEROUS_LIMITS, "IRONBOOK_GATEWAY_MAX_INFLIGHT_LEDGER_REQUESTS": "2"},
        ),
    ]
    try:
        cluster.start(timeout_ms=START_TIMEOUT_S * 1000)
        asyncio.run(cluster.wait_leaders(timeout_ms=START_TIMEOUT_S * 1000))
        for process in extras:
            process.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        urls = [f"http://127.0.0.1:{port}" for port in (main_port, throttled_port, tight_port)]
        for url in urls:
            _wait_ready(url, deadline)
        secret = local_signing_key(cluster.data_dir)
        yield Api(
            url=urls[0],
            throttled_url=urls[1],
            tight_url=urls[2],
            tight_worker=extras[1],
            data_dir=cluster.data_dir,
            secret=secret,
            cluster=cluster,
            extra_workers=extras,
        )
    finally:
        for process in extras:
            process.stop(timeout_ms=10_000)
        cluster.stop()
        ports.release()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class World:
    """An open market and helpers to make funded accounts, over HTTP."""

    api: Api
    http: httpx.Client
    market_id: str

    def account(self, balance_minor: int = 0) -> str:
        account_id = unique("acc")
        admin = self.api.auth("admin")
        response = self.http.post("/v1/accounts", json={"account_id": account_id}, headers=admin)
        assert response.status_code == 201, response.text
        if balance_minor:
            response = self.http.post(
                f"/v1/accounts/{account_id}/deposits",
                json={"amount_minor": balance_minor, "reason": "test top-up"},
                headers=self.api.auth("cashier"),
            )
            assert response.status_code == 201, response.text
        return account_id

    def bet_body(self, account_id: str, stake_minor: int = 100) -> dict[str, object]:
        return {
            "account_id": account_id,
            "stake_minor": stake_minor,
            "legs": [{"market_id": self.market_id, "selection_id": "home", "odds": "2.50"}],
        }

    def balance(self, account_id: str) -> int:
        response = self.http.get(f"/v1/accounts/{account_id}", headers=self.api.auth("auditor"))
        assert response.status_code == 200, response.text
        balance: int = response.json()["balance_minor"]
        return balance


def create_market(api: Api, http: httpx.Client, market_id: str | None = None) -> str:
    market_id = market_id or unique("mkt")
    response = http.post(
        "/v1/markets",
        json={
            "market_id": market_id,
            "event": "ev-1",
            "name": "Match odds",
            "reason": "new market",
            "selections": [
                {"selection_id": "home", "name": "Home", "odds": "2.50"},
                {"selection_id": "draw", "name": "Draw", "odds": "3.20"},
                {"selection_id": "away", "name": "Away", "odds": "3.00"},
            ],
        },
        headers=api.auth("trader"),
    )
    assert response.status_code == 201, response.text
    return market_id
