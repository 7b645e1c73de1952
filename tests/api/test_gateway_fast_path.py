"""The edge in process: the app built around a `Gateway` with a stub ledger,
claim store and revocation store (no cluster).

`POST /v1/bets`: a bet without an Idempotency-Key costs no claim; with one,
the claim carries the same fingerprint the routes would compute; refusals
are RFC 9457 problems with the route's codes. Then the edge's own refusals:
an unreadable `X-Forwarded-For` from a trusted proxy, a body that does not
arrive in time, `/metrics` on the public port, and token revocation."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from ironbook import core
from ironbook.adapters.audit.trail import EventPage, EventQuery
from ironbook.client import GaveUp
from ironbook.core.odds import parse_odds
from ironbook.logs import setup_logging
from ironbook.services.gateway import models as m
from ironbook.services.gateway.app import create_app
from ironbook.services.gateway.auth import (
    load_verifier,
    local_keys_dir,
    local_signing_key,
    mint_token,
    token_id,
)
from ironbook.services.gateway.history import (
    ArchivedReply,
    ArchivedRequest,
    HistoryReply,
    HistoryRequest,
    HistoryUnavailable,
)
from ironbook.services.gateway.idempotency import fingerprint, keyed_request_id
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import Watcher
from ironbook.services.gateway.revocation import Revocations
from ironbook.services.gateway.runtime import Gateway
from ironbook.settings import GatewaySettings, LogSettings

BET = {
    "account_id": "acc-1",
    "stake_minor": 100,
    "legs": [{"market_id": "m1", "selection_id": "home", "odds": "2.50"}],
}


class StubLedger:
    def __init__(self) -> None:
        self.commands: list[Any] = []
        self.answer: core.Outcome | Exception = core.Accepted(
            events=(),
            result=core.BetReply(
                bet_id="B0-7", status="open", odds=250, potential_payout_minor=250,
                balance_minor=900,
            ),
        )  # fmt: skip

    async def submit(self, command: Any) -> core.Outcome:
        self.commands.append(command)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        return None


class StubClaims:
    def __init__(self) -> None:
        self.claims: list[tuple[str, str]] = []

    async def claim(self, request_id: str, request_fingerprint: str) -> None:
        self.claims.append((request_id, request_fingerprint))


Harness = tuple[Any, StubLedger, StubClaims, str]
"""The app, its stub ledger and claim store, and a bettor token for acc-1."""


class NoHistory:
    async def page(self, partition: int, request: HistoryRequest) -> HistoryReply:
        raise HistoryUnavailable("not in these tests")

    async def archived(self, partition: int, request: ArchivedRequest) -> ArchivedReply:
        raise HistoryUnavailable("not in these tests")


class NoOdds:
    async def watch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        raise AssertionError("not in these tests")

    async def unwatch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        raise AssertionError("not in these tests")

    async def unwatch_all(self, watcher: Watcher) -> None:
        raise AssertionError("not in these tests")

    async def snapshot(self, markets: Iterable[str], events: Iterable[str]) -> list[str]:
        raise AssertionError("not in these tests")


class StubRevoker:
    def __init__(self) -> None:
        self.revoked: list[tuple[str, str]] = []

    async def revoke(self, jti: str, *, by: str) -> int:
        self.revoked.append((jti, by))
        return time.time_ns() // 1_000_000

    async def follow(self, revocations: Revocations, loaded: asyncio.Event) -> None:
        raise AssertionError("not in these tests")


class NoAudit:
    def __init__(self) -> None:
        self.noted: list[tuple[str, str, str, str, str]] = []

    async def receipt(self, partition: int, seq: int) -> bytes:
        raise AssertionError("not in these tests")

    async def events(self, query: EventQuery) -> EventPage:
        raise AssertionError("not in these tests")

    def note(self, kind: str, actor: str, reason: str, target: str, detail: str = "") -> None:
        self.noted.append((kind, actor, reason, target, detail))

    async def record_events(self) -> None:
        raise AssertionError("not in these tests")


def _harness(tmp_path: Path, settings: GatewaySettings) -> tuple[Harness, Gateway]:
    ledger, claims = StubLedger(), StubClaims()
    gateway = Gateway(
        settings=settings,
        partitions=1,
        metrics=GatewayMetrics(CollectorRegistry()),
        verifier=load_verifier(algorithm="HS256", keys_dir=local_keys_dir(tmp_path)),
        ledger=ledger,
        probe=ledger,
        claims=claims,
        history=NoHistory(),
        odds=NoOdds(),
        revoker=StubRevoker(),
        audit=NoAudit(),
    )
    token = mint_token(local_signing_key(tmp_path), role="bettor", account_id="acc-1")
    return (create_app(gateway), ledger, claims, token), gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Harness:
    return _harness(tmp_path, GatewaySettings())[0]


def _post(app: Any, body: object, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            if isinstance(body, bytes):
                return await client.post("/v1/bets", content=body, headers=headers)
            return await client.post("/v1/bets", json=body, headers=headers)

    return asyncio.run(go())


def test_a_bet_without_a_key_costs_no_claim(
    gateway: Harness,
) -> None:
    app, ledger, claims, token = gateway
    response = _post(app, BET, {"Authorization": f"Bearer {token}", "X-Request-Id": "r-1"})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "bet_id": "B0-7",
        "status": "open",
        "odds": "2.50",
        "potential_payout_minor": 250,
        "balance_minor": 900,
    }
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "r-1"
    assert response.headers["idempotency-key-generated"] == "true"
    assert claims.claims == []
    (command,) = ledger.commands
    assert isinstance(command, core.PlaceBet)
    assert command.request_id == f"g:{response.headers['idempotency-key']}"
    leg_odds = command.legs[0].odds
    assert (command.account_id, command.stake_minor, leg_odds) == ("acc-1", 100, parse_odds("2.50"))


def test_a_keyed_bet_claims_the_routes_fingerprint(
    gateway: Harness,
) -> None:
    app, ledger, claims, token = gateway
    response = _post(app, BET, {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"})
    assert response.status_code == 201, response.text
    assert "idempotency-key-generated" not in response.headers
    request_id = keyed_request_id("bettor:acc-1", "k-1")
    expected = fingerprint("POST", "/v1/bets", msgspec.to_builtins(m.decode_bet(json.dumps(BET))))
    assert claims.claims == [(request_id, expected)]
    assert ledger.commands[0].request_id == request_id


def test_pending_in_play_bet(gateway: Harness) -> None:
    app, ledger, _, token = gateway
    ledger.answer = core.Accepted(
        events=(),
        result=core.BetReply(
            bet_id="B0-8", status="pending", odds=250, potential_payout_minor=250,
            balance_minor=900,
        ),
    )  # fmt: skip
    response = _post(app, BET, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "status", "code", "loc"),
    [
        (b"{not json", 400, "validation_failed", None),
        ({**BET, "stake_minor": "100"}, 422, "validation_failed", ["body", "stake_minor"]),
        ({**BET, "extra": 1}, 422, "validation_failed", ["body", "extra"]),
        ({**BET, "legs": []}, 422, "validation_failed", ["body", "legs"]),
        ({**BET, "account_id": "acc-2"}, 403, "forbidden", None),
        (
            {**BET, "legs": [{"market_id": "m1", "selection_id": "home", "odds": "1.00"}]},
            422,
            "invalid_odds",
            None,
        ),
    ],
)
def test_refusals_are_problems(
    gateway: Harness,
    body: object,
    status: int,
    code: str,
    loc: list[str] | None,
) -> None:
    app, ledger, claims, token = gateway
    response = _post(app, body, {"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["status"], problem["instance"]) == (code, status, "/v1/bets")
    if loc is not None:
        assert [error["loc"] for error in problem["errors"]] == [loc]
    assert ledger.commands == [] and claims.claims == []


def test_ledger_answers_map_to_problems(gateway: Harness) -> None:
    app, ledger, _, token = gateway
    headers = {"Authorization": f"Bearer {token}"}
    ledger.answer = core.Rejected(code="insufficient_funds", message="balance 50 is less than 100")
    refused = _post(app, BET, headers)
    assert (refused.status_code, refused.json()["code"]) == (422, "insufficient_funds")
    assert refused.headers["idempotency-key"].startswith("gen-")
    ledger.answer = GaveUp("no leader")
    unavailable = _post(app, BET, headers)
    assert (unavailable.status_code, unavailable.json()["code"]) == (503, "ledger_unavailable")
    assert unavailable.headers["retry-after"] == "1"
    missing = _post(app, BET, {})
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    noted = app.state.gateway.audit.noted[-1]
    assert (noted[0], noted[2], noted[3]) == ("auth_failure", "missing_token", "/v1/bets")


def test_the_request_id_is_on_the_line_that_names_the_ledger_command(
    gateway: Harness,
) -> None:
    app, ledger, _, token = gateway
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging(LogSettings(level="DEBUG", format="json"), process="gateway", stream=out)
    try:
        response = _post(app, BET, {"Authorization": f"Bearer {token}", "X-Request-Id": "trace-9"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert response.status_code == 201, response.text
    (command,) = ledger.commands
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (line,) = [line for line in lines if line["logger"] == "ironbook.gateway"]
    assert line["request_id"] == "trace-9"
    assert f"PlaceBet {command.request_id} -> BetReply" in line["message"]


# The edge's own refusals.


def _request(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("10.0.0.1", 5000),
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await http.request(method, path, headers=headers)

    return asyncio.run(go())


def test_forwarded_for_is_read_behind_trusted_proxies_only(tmp_path: Path) -> None:
    settings = GatewaySettings(trusted_proxies=("10.0.0.0/24",), deny_cidrs=("198.51.100.0/24",))
    (app, *_), _ = _harness(tmp_path, settings)
    denied = _request(app, "GET", "/healthz", {"X-Forwarded-For": "198.51.100.9"})
    assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
    spoofed = _request(
        app, "GET", "/healthz", {"X-Forwarded-For": "198.51.100.9"}, client=("203.0.113.5", 1)
    )
    assert spoofed.status_code == 200, "a client that is not a proxy is not believed"
    garbage = _request(app, "GET", "/healthz", {"X-Forwarded-For": "1.2.3.4, nonsense"})
    assert garbage.status_code == 400
    assert garbage.json()["code"] == "validation_failed"
    assert "X-Forwarded-For" in garbage.json()["detail"]


def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    (app, ledger, _, token), _ = _harness(tmp_path, GatewaySettings(body_read_timeout_ms=200))
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/bets",
            "raw_path": b"/v1/bets",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", b"100"),
            ],
            "client": ("10.0.0.1", 5000),
            "server": ("gw", 80),
        }
        parts = [{"type": "http.request", "body": b'{"account_id"', "more_body": True}]

        async def receive() -> dict[str, Any]:
            if parts:
                return parts.pop()
            await asyncio.sleep(3600)  # a slowloris body: the rest never comes
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 5)

    asyncio.run(go())
    assert sent[0]["status"] == 408
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["code"] == "request_timeout"
    assert ledger.commands == []


def test_metrics_are_not_on_the_public_port(gateway: Harness) -> None:
    app, *_ = gateway
    assert _request(app, "GET", "/metrics").status_code == 404


def test_an_admin_revokes_a_token_and_it_is_refused_at_once(tmp_path: Path) -> None:
    (app, _, _, bettor), gateway = _harness(tmp_path, GatewaySettings())
    key = local_signing_key(tmp_path)
    admin = {"Authorization": f"Bearer {mint_token(key, role='admin', sub='admin:ops-1')}"}
    bettor_headers = {"Authorization": f"Bearer {bettor}"}
    assert _post(app, BET, bettor_headers).status_code == 201  # verified and cached
    jti = token_id(bettor)
    forbidden = _request(app, "POST", f"/v1/admin/tokens/{jti}/revoke", bettor_headers)
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    bad = _request(app, "POST", "/v1/admin/tokens/not.a.jti/revoke", admin)
    assert bad.status_code == 422
    revoked = _request(app, "POST", f"/v1/admin/tokens/{jti}/revoke", admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["jti"] == jti
    assert abs(revoked.json()["revoked_at_ms"] - time.time() * 1000) < 60_000
    assert isinstance(gateway.revoker, StubRevoker)
    assert gateway.revoker.revoked == [(jti, "admin:ops-1")]
    refused = _post(app, BET, bettor_headers)
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")


class GatedLedger(StubLedger):
    """Holds every bet on market `hot` until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.two_held = asyncio.Event()
        self.held = 0

    async def submit(self, command: Any) -> core.Outcome:
        if isinstance(command, core.PlaceBet) and command.legs[0].market_id == "hot":
            self.held += 1
            if self.held == 2:
                self.two_held.set()
            await self.gate.wait()
        return await super().submit(command)


def test_a_flooded_market_is_shed_alone(tmp_path: Path) -> None:
    """With 2 bets in flight on one market (its limit), a third on it is
    refused at once with 503 `market_busy`, while a bet on another market
    is taken; once they finish, the market takes bets again."""
    (_, _, claims, token), gateway = _harness(
        tmp_path, GatewaySettings(max_inflight_bets_per_market=2)
    )
    ledger = GatedLedger()
    gateway.ledger = ledger
    app = create_app(gateway)
    headers = {"Authorization": f"Bearer {token}"}

    def bet(market: str) -> dict[str, object]:
        return {**BET, "legs": [{"market_id": market, "selection_id": "home", "odds": "2.50"}]}

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            held = [
                asyncio.create_task(client.post("/v1/bets", json=bet("hot"), headers=headers))
                for _ in range(2)
            ]
            await asyncio.wait_for(ledger.two_held.wait(), timeout=10)
            busy = await client.post("/v1/bets", json=bet("hot"), headers=headers)
            other = await client.post("/v1/bets", json=bet("calm"), headers=headers)
            ledger.gate.set()
            done = await asyncio.gather(*held)
            again = await client.post("/v1/bets", json=bet("hot"), headers=headers)
            return [busy, other, *done, again]

    busy, other, *done, again = asyncio.run(go())
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "market_busy"
    assert "hot" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "1"
    assert other.status_code == 201, other.text
    assert [r.status_code for r in done] == [201, 201]
    assert again.status_code == 201, again.text
    assert gateway.market_admission.inflight == {}
    assert gateway.admission.inflight == 0
    markets = [c.legs[0].market_id for c in ledger.commands if isinstance(c, core.PlaceBet)]
    assert sorted(markets) == ["calm", "hot", "hot", "hot"]  # the refused bet never reached it
    assert claims.claims == []
