"""Idempotency-Key and concurrent bets: exactly once, never negative."""

from __future__ import annotations

import asyncio
import json

import httpx
from api_support import Api, World, unique


def test_same_key_twice_places_one_bet(world: World) -> None:
    account_id = world.account(1_000)
    headers = world.api.auth("bettor", account_id, key=unique("key"))
    first = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=headers)
    second = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert first.headers["Idempotency-Key"] == headers["Idempotency-Key"]
    assert "Idempotency-Key-Generated" not in first.headers
    bets = world.http.get(f"/v1/accounts/{account_id}/bets", headers=headers).json()["bets"]
    assert len(bets) == 1
    assert world.balance(account_id) == 900


def test_key_order_and_whitespace_do_not_change_the_request(world: World) -> None:
    account_id = world.account(1_000)
    headers = {
        **world.api.auth("bettor", account_id, key=unique("key")),
        "Content-Type": "application/json",
    }
    body = world.bet_body(account_id)
    body_a = json.dumps(body, indent=2)
    body_b = json.dumps(dict(reversed(list(body.items()))), separators=(",", ":"))
    assert body_a != body_b
    first = world.http.post("/v1/bets", content=body_a, headers=headers)
    second = world.http.post("/v1/bets", content=body_b, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert world.balance(account_id) == 900


def test_same_key_other_body_is_409(world: World) -> None:
    account_id = world.account(1_000)
    headers = world.api.auth("bettor", account_id, key=unique("key"))
    first = world.http.post("/v1/bets", json=world.bet_body(account_id, 100), headers=headers)
    assert first.status_code == 201
    other = world.http.post("/v1/bets", json=world.bet_body(account_id, 200), headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert world.balance(account_id) == 900


def test_keys_are_namespaced_per_principal(world: World) -> None:
    key = unique("shared-key")
    first, second = world.account(1_000), world.account(1_000)
    for account_id in (first, second):
        response = world.http.post(
            "/v1/bets",
            json=world.bet_body(account_id),
            headers=world.api.auth("bettor", account_id, key=key),
        )
        assert response.status_code == 201, response.text
    assert world.balance(first) == world.balance(second) == 900


def test_a_refusal_is_replayed_too(world: World) -> None:
    account_id = world.account(50)
    headers = world.api.auth("bettor", account_id, key=unique("key"))
    refused = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=headers)
    assert refused.json()["code"] == "insufficient_funds"
    world.http.post(
        f"/v1/accounts/{account_id}/deposits",
        json={"amount_minor": 1_000, "reason": "test top-up"},
        headers=world.api.auth("cashier"),
    )
    again = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=headers)
    assert again.status_code == 422
    assert again.json()["code"] == "insufficient_funds"
    assert world.balance(account_id) == 1_050


def test_same_key_deposit_retried_concurrently_applies_once(world: World) -> None:
    account_id = world.account(0)
    headers = world.api.auth("cashier", key=unique("key"))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=world.api.url, timeout=20) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            f"/v1/accounts/{account_id}/deposits",
                            json={"amount_minor": 700, "reason": "test top-up"},
                            headers=headers,
                        )
                        for _ in range(10)
                    )
                )
            )

    responses = asyncio.run(run())
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["transaction_id"] for r in responses}) == 1
    assert world.balance(account_id) == 700


def test_fifty_concurrent_bets_on_a_balance_for_ten(api: Api, world: World) -> None:
    account_id = world.account(1_000)
    bettor = api.auth("bettor", account_id)

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            "/v1/bets",
                            json=world.bet_body(account_id, 100),
                            headers={**bettor, "Idempotency-Key": f"bet-{i}"},
                        )
                        for i in range(50)
                    )
                )
            )

    responses = asyncio.run(run())
    accepted = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(accepted) == 10
    assert all(r.status_code == 422 for r in refused), {r.status_code for r in refused}
    assert all(r.json()["code"] == "insufficient_funds" for r in refused)
    assert all(r.json()["balance_minor"] >= 0 for r in accepted)
    assert sorted(r.json()["balance_minor"] for r in accepted) == list(range(0, 1_000, 100))
    assert world.balance(account_id) == 0
    bets = world.http.get(
        f"/v1/accounts/{account_id}/bets", params={"limit": 200}, headers=bettor
    ).json()["bets"]
    assert len(bets) == 10
