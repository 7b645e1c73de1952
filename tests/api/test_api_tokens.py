"""Token revocation on a real cluster: one revocation reaches every gateway
worker (four processes: the two behind the shared port and the two on ports
of their own), their caches included, and a worker started afterwards; the
CLI revokes too. And no token is ever written to a log file."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import httpx
import msgspec
import pytest
from api_support import GENEROUS_LIMITS, START_TIMEOUT_S, Api, _wait_ready, extra_worker
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.nats.provision import close_nats
from ironbook.cli import main
from ironbook.services.gateway.auth import mint_token, token_id
from ironbook.services.gateway.revocation import SUBJECT, RevocationMessage

REVOCATION_WAIT_S = 15.0
"""Bounded wait for the test; the propagation time itself is measured by
`ironbook bench revocation`, never asserted here."""
SHARED_PORT_CONNECTIONS = 8
"""Fresh connections to the shared port: the kernel spreads them over the
workers behind it, so each of them sees (and caches) the token."""


def _statuses(api: Api, url: str, token: str) -> list[int]:
    """One request per fresh connection (one for a single-worker URL: the
    throttled worker allows 5 a second per principal)."""
    headers = {"Authorization": f"Bearer {token}"}
    count = SHARED_PORT_CONNECTIONS if url == api.url else 1
    return [
        httpx.get(f"{url}/v1/markets?limit=1", headers=headers, timeout=10).status_code
        for _ in range(count)
    ]


def _urls(api: Api) -> list[str]:
    return [api.url, api.throttled_url, api.tight_url]


def _wait_refused(api: Api, urls: list[str], token: str) -> None:
    deadline = time.monotonic() + REVOCATION_WAIT_S
    pending = list(urls)
    while pending:
        pending = [url for url in pending if set(_statuses(api, url, token)) != {401}]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"still accepted by {pending} after {REVOCATION_WAIT_S} s")
        time.sleep(0.05)


def test_an_admin_revocation_reaches_every_worker_and_a_new_one(api: Api) -> None:
    token = api.token("auditor", sub="auditor:revoked-by-admin")
    for url in _urls(api):
        assert set(_statuses(api, url, token)) == {200}, url  # verified and cached everywhere
    revoked = httpx.post(
        f"{api.url}/v1/admin/tokens/{token_id(token)}/revoke",
        headers=api.auth("admin"),
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["jti"] == token_id(token)
    _wait_refused(api, _urls(api), token)
    other = api.token("auditor", sub="auditor:revoked-by-admin")
    assert set(_statuses(api, api.url, other)) == {200}, "another token of the sub still works"

    ports = PortLease()
    port, metrics_port = ports.take(2)
    late = extra_worker(api.cluster, "gw-late", port, metrics_port, GENEROUS_LIMITS)
    try:
        late.start()
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, time.monotonic() + START_TIMEOUT_S)
        assert set(_statuses(api, url, token)) == {401}, "a worker started later knows it"
        assert set(_statuses(api, url, other)) == {200}
    finally:
        late.stop(timeout_ms=10_000)
        ports.release()


def test_the_cli_revokes_on_every_worker(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    token = api.token("bettor", "acc-cli", sub="bettor:acc-cli")
    assert set(_statuses(api, api.tight_url, token)) == {200}
    jti = token_id(token)
    assert main(["token", "revoke", jti, "--data-dir", str(api.data_dir)]) == 0
    assert f"revoked {jti}" in capsys.readouterr().out
    _wait_refused(api, [api.url, api.tight_url], token)
    assert main(["token", "revoke", "not.a.jti", "--data-dir", str(api.data_dir)]) == 2


def test_running_workers_act_on_the_announcement_alone(api: Api) -> None:
    """The message on `ironbook.auth.revoked`, without a bucket write: what
    makes running workers refuse at once when the replicated write is slow."""
    token = api.token("auditor", sub="auditor:announced")
    assert set(_statuses(api, api.url, token)) == {200}

    async def announce() -> None:
        nc = await api.cluster.ops.connect("test-announce")
        try:
            message = RevocationMessage(token_id(token), time.time_ns() // 1_000_000, "test")
            await nc.publish(SUBJECT, msgspec.json.encode(message))
            await nc.publish(SUBJECT, b"not a revocation")  # ignored, logged
            await nc.flush()
        finally:
            await close_nats(nc)

    asyncio.run(announce())
    _wait_refused(api, _urls(api), token)


def test_revocation_needs_an_admin_and_a_valid_jti(api: Api, http: httpx.Client) -> None:
    cashier = http.post("/v1/admin/tokens/abc/revoke", headers=api.auth("cashier"))
    assert (cashier.status_code, cashier.json()["code"]) == (403, "forbidden")
    for bad in ("a.b", "x" * 129, "a*b"):
        response = http.post(f"/v1/admin/tokens/{bad}/revoke", headers=api.auth("admin"))
        assert response.status_code in (404, 422), (bad, response.status_code)


JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}")


def test_no_token_reaches_any_log_file(api: Api) -> None:
    """The flows that carry tokens, good and bad: HTTP calls, refused and
    expired tokens, WebSockets by header and by subprotocol, a token in the
    query string (refused), a revocation. Then every log of the cluster is
    searched for any of those tokens, or anything shaped like a JWT."""
    used: list[str] = []

    def token(role: str, account_id: str | None = None, **kwargs: int) -> str:
        minted = api.token(role, account_id, **kwargs)
        used.append(minted)
        return minted

    bettor = token("bettor", "acc-logs")
    with api.client() as http:
        http.get("/v1/accounts/acc-logs", headers={"Authorization": f"Bearer {bettor}"})
        http.get("/v1/markets", headers={"Authorization": f"Bearer {bettor}x"})
        expired = mint_token(api.secret, role="admin", ttl_s=60, now_s=int(time.time()) - 3600)
        used.append(expired)
        http.get("/v1/markets", headers={"Authorization": f"Bearer {expired}"})
        too_long = token("admin", ttl_s=7_200)
        http.get("/v1/markets", headers={"Authorization": f"Bearer {too_long}"})
        revoked = token("auditor")
        http.post(
            f"/v1/admin/tokens/{token_id(revoked)}/revoke", headers=api.auth("admin")
        ).raise_for_status()
        http.get("/v1/markets", headers={"Authorization": f"Bearer {revoked}"})

    ws_url = api.url.replace("http://", "ws://") + "/v1/odds/stream"

    async def sockets() -> None:
        auditor = token("auditor")
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {auditor}"}):
            pass
        offered = [Subprotocol(f"ironbook.bearer.{auditor}"), Subprotocol("ironbook.v1")]
        async with connect(ws_url, subprotocols=offered):
            pass
        for refused in (f"{ws_url}?token={auditor}", f"{ws_url}?access_token={bettor}"):
            with pytest.raises(InvalidStatus):
                async with connect(refused):
                    pass
        with contextlib.suppress(InvalidStatus):
            async with connect(ws_url, subprotocols=[Subprotocol(f"ironbook.bearer.{revoked}")]):
                pass

    asyncio.run(sockets())
    time.sleep(1.5)  # workers flush their log lines as they write them; be generous
    logs = [path for path in api.data_dir.rglob("*.log") if path.is_file()]
    assert logs, "the cluster writes log files"
    for path in logs:
        text = path.read_text(errors="replace")
        for minted in used:
            signature = minted.rsplit(".", 1)[1]
            assert signature not in text, f"a token is in {path}"
        shaped = JWT_SHAPE.search(text)
        assert shaped is None, f"something shaped like a JWT is in {path}: {shaped.group()[:20]}"
