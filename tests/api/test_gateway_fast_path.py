"""`POST /v1/bets` as the edge answers it, in process: the app built around
a `Gateway` with a stub ledger and a stub claim store (no cluster). A bet without an Idempotency-Key
costs no claim; with one, the claim carries the same fingerprint the routes
would compute; refusals are RFC 9457 problems with the route's codes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from ironbook import core
from ironbook.client import GaveUp
from ironbook.core.odds import parse_odds
from ironbook.logs import setup_logging
from ironbook.services.gateway import models as m
from ironbook.services.gateway.app import create_app
from ironbook.services.gateway.auth import (
    load_or_create_secret,
    load_verifier,
    local_secret_file,
    mint_token,
)
from ironbook.services.gateway.history import HistoryReply, HistoryRequest, HistoryUnavailable
from ironbook.services.gateway.idempotency import fingerprint, keyed_request_id
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import Watcher
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


class NoOdds:
    async def watch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        raise AssertionError("not in these tests")

    async def unwatch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        raise AssertionError("not in these tests")

    async def unwatch_all(self, watcher: Watcher) -> None:
        raise AssertionError("not in these tests")

    async def snapshot(self, markets: Iterable[str], events: Iterable[str]) -> list[str]:
        raise AssertionError("not in these tests")


@pytest.fixture
def gateway(tmp_path: Path) -> Harness:
    secret_file = local_secret_file(tmp_path)
    ledger, claims = StubLedger(), StubClaims()
    app = create_app(
        Gateway(
            settings=GatewaySettings(),
            partitions=1,
            metrics=GatewayMetrics(CollectorRegistry()),
            verifier=load_verifier(
                algorithm="HS256", secret_file=secret_file, public_key_file=None
            ),
            ledger=ledger,
            probe=ledger,
            claims=claims,
            history=NoHistory(),
            odds=NoOdds(),
        )
    )
    token = mint_token(load_or_create_secret(secret_file), role="bettor", account_id="acc-1")
    return app, ledger, claims, token


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
