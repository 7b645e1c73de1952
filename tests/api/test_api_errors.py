"""Bad input gets a 4xx problem with a stable code, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_support import Api, World


def _assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 422),
        (b"null", 422),
        (b'{"amount_minor": "100"}', 422),
        (b'{"amount_minor": 100.0}', 422),
        (b'{"amount_minor": true}', 422),
        (b'{"amount_minor": -5}', 422),
        (b'{"amount_minor": 0}', 422),
        (b'{"amount_minor": 100000000000000000000000000000000}', 422),
        (b'{"amount_minor": 100, "extra": 1}', 422),
        (b"{}", 422),
        (b"[" * 50_000 + b"]" * 50_000, 413),
        (b'{"amount_minor": ' + b"9" * 5000 + b"}", 400),
    ],
)
def test_bad_deposit_bodies(world: World, body: bytes, status: int) -> None:
    account_id = world.account(1_000)
    response = world.http.post(
        f"/v1/accounts/{account_id}/deposits",
        content=body,
        headers={**world.api.auth("cashier"), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    _assert_problem(response, status)
    assert world.balance(account_id) == 1_000


def test_deeply_nested_json_within_the_size_limit(world: World) -> None:
    account_id = world.account(1_000)
    body = b"[" * 20_000 + b"]" * 20_000
    response = world.http.post(
        f"/v1/accounts/{account_id}/deposits",
        content=body,
        headers={**world.api.auth("cashier"), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert world.balance(account_id) == 1_000


@pytest.mark.parametrize(
    ("odds", "status", "code"),
    [
        ("2.5x", 422, "validation_failed"),
        ("1.00", 422, "invalid_odds"),
        ("1001.01", 422, "invalid_odds"),
        ("0.50", 422, "invalid_odds"),
        ("2.505", 422, "validation_failed"),
        ("-2", 422, "validation_failed"),
        ("", 422, "validation_failed"),
        ("٢.٥٠", 422, "validation_failed"),
        ("3.00", 409, "price_changed"),
    ],
)
def test_bad_odds_strings(world: World, odds: str, status: int, code: str) -> None:
    account_id = world.account(1_000)
    body = world.bet_body(account_id)
    body["legs"] = [{"market_id": world.market_id, "selection_id": "home", "odds": odds}]
    response = world.http.post("/v1/bets", json=body, headers=world.api.auth("bettor", account_id))
    _assert_problem(response, status, code)
    assert world.balance(account_id) == 1_000


def test_ledger_refusals_map_to_codes(world: World) -> None:
    account_id = world.account(100)
    bettor = world.api.auth("bettor", account_id)
    http = world.http
    _assert_problem(
        http.post("/v1/bets", json=world.bet_body(account_id, 500), headers=bettor),
        422,
        "insufficient_funds",
    )
    _assert_problem(
        http.post("/v1/bets", json=world.bet_body(account_id, 1), headers=bettor),
        422,
        "stake_too_low",
    )
    body = world.bet_body(account_id)
    body["legs"] = [{"market_id": "no-such-market", "selection_id": "home", "odds": "2.50"}]
    _assert_problem(http.post("/v1/bets", json=body, headers=bettor), 404, "unknown_market")
    _assert_problem(
        http.post(
            f"/v1/accounts/{account_id}/withdrawals", json={"amount_minor": 101}, headers=bettor
        ),
        422,
        "insufficient_funds",
    )
    admin = world.api.auth("admin")
    _assert_problem(
        http.post("/v1/accounts", json={"account_id": account_id}, headers=admin),
        409,
        "account_exists",
    )
    _assert_problem(
        http.post("/v1/accounts", json={"account_id": "sys:house"}, headers=admin),
        422,
        "invalid_account_id",
    )
    _assert_problem(
        http.post("/v1/accounts", json={"currency": "EUR"}, headers=admin),
        422,
        "unsupported_currency",
    )
    trader = world.api.auth("trader")
    _assert_problem(
        http.post(f"/v1/markets/{world.market_id}/resume", json={"reason": "test"}, headers=trader),
        409,
        "invalid_status_change",
    )
    _assert_problem(
        http.post(
            f"/v1/markets/{world.market_id}/settle",
            json={"winners": [], "reason": "result"},
            headers=trader,
        ),
        409,
        "invalid_status_change",
    )
    assert world.balance(account_id) == 100


def test_not_found(api: Api, http: httpx.Client) -> None:
    admin = api.auth("admin")
    _assert_problem(http.get("/v1/accounts/nobody-here", headers=admin), 404, "unknown_account")
    _assert_problem(http.get("/v1/bets/B0-999999999", headers=admin), 404, "unknown_bet")
    _assert_problem(http.get("/v1/bets/whatever", headers=admin), 404, "unknown_bet")
    _assert_problem(http.get("/v1/markets/none", headers=admin), 404, "unknown_market")
    _assert_problem(http.get("/v1/nothing", headers=admin), 404, "not_found")
    _assert_problem(http.delete("/v1/bets", headers=admin), 405, "method_not_allowed")
    _assert_problem(
        http.get("/v1/markets", params={"after": "no-such-cursor"}, headers=admin),
        400,
        "invalid_cursor",
    )
    _assert_problem(
        http.get("/v1/markets", params={"limit": 0}, headers=admin), 422, "validation_failed"
    )


def test_oversized_body_is_413(world: World) -> None:
    account_id = world.account(1_000)
    body = world.bet_body(account_id)
    body["padding"] = "x" * 100_000
    response = world.http.post("/v1/bets", json=body, headers=world.api.auth("bettor", account_id))
    _assert_problem(response, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    chunked = world.http.post(
        "/v1/bets",
        content=chunks(),
        headers={**world.api.auth("bettor", account_id), "Content-Type": "application/json"},
    )
    _assert_problem(chunked, 413, "payload_too_large")
    assert world.balance(account_id) == 1_000


def test_bad_idempotency_key_is_400(world: World) -> None:
    account_id = world.account(1_000)
    headers = {**world.api.auth("bettor", account_id), "Idempotency-Key": "x" * 200}
    response = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=headers)
    _assert_problem(response, 400, "validation_failed")
    assert world.balance(account_id) == 1_000
