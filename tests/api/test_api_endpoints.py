"""Every endpoint's happy path, against a real cluster through the gateway."""

from __future__ import annotations

import time

import httpx
from api_support import Api, World, create_market, unique


def test_account_lifecycle(api: Api, http: httpx.Client) -> None:
    account_id = unique("acc")
    admin = api.auth("admin")
    created = http.post("/v1/accounts", json={"account_id": account_id}, headers=admin)
    assert created.status_code == 201
    assert created.json() == {"account_id": account_id, "balance_minor": 0}
    assert created.headers["Idempotency-Key-Generated"] == "true"
    assert created.headers["Idempotency-Key"].startswith("gen-")

    deposit = http.post(
        f"/v1/accounts/{account_id}/deposits",
        json={"amount_minor": 5_000, "reason": "test top-up"},
        headers=api.auth("cashier"),
    )
    assert deposit.status_code == 201
    assert deposit.json()["balance_minor"] == 5_000
    assert deposit.json()["transaction_id"]

    bettor = api.auth("bettor", account_id)
    withdrawal = http.post(
        f"/v1/accounts/{account_id}/withdrawals", json={"amount_minor": 1_500}, headers=bettor
    )
    assert withdrawal.status_code == 201
    assert withdrawal.json()["balance_minor"] == 3_500

    limits = http.put(
        f"/v1/accounts/{account_id}/limits",
        json={"day_minor": 10_000, "week_minor": None},
        headers=bettor,
    )
    assert limits.status_code == 200, limits.text
    changes = {c["period"]: c for c in limits.json()["changes"]}
    assert changes["day"]["limit_minor"] == 10_000

    account = http.get(f"/v1/accounts/{account_id}", headers=bettor)
    assert account.status_code == 200
    body = account.json()
    assert body["account_id"] == account_id
    assert body["balance_minor"] == 3_500
    assert body["currency"] == "GBP"
    assert body["status"] == "active"
    assert {limit["period"] for limit in body["limits"]} == {"day", "week", "month"}

    excluded = http.post(
        f"/v1/accounts/{account_id}/self-exclusion", json={"days": 30}, headers=bettor
    )
    assert excluded.status_code == 201
    assert excluded.json()["excluded_until_ms"] > 0
    after = http.get(f"/v1/accounts/{account_id}", headers=bettor).json()
    assert after["status"] == "self_excluded"


def test_account_without_id_gets_one(api: Api, http: httpx.Client) -> None:
    response = http.post("/v1/accounts", json={}, headers=api.auth("admin"))
    assert response.status_code == 201
    assert response.json()["account_id"].startswith("acc-")


def test_bet_place_get_and_list(world: World) -> None:
    account_id = world.account(1_000)
    bettor = world.api.auth("bettor", account_id)
    placed = world.http.post("/v1/bets", json=world.bet_body(account_id, 200), headers=bettor)
    assert placed.status_code == 201, placed.text
    bet = placed.json()
    assert bet["status"] == "open"
    assert bet["odds"] == "2.50"
    assert bet["potential_payout_minor"] == 500
    assert bet["balance_minor"] == 800

    fetched = world.http.get(f"/v1/bets/{bet['bet_id']}", headers=bettor)
    assert fetched.status_code == 200
    assert fetched.json()["stake_minor"] == 200
    assert fetched.json()["legs"][0]["odds"] == "2.50"

    for _ in range(2):
        response = world.http.post("/v1/bets", json=world.bet_body(account_id), headers=bettor)
        assert response.status_code == 201
    first = world.http.get(f"/v1/accounts/{account_id}/bets?limit=2", headers=bettor)
    assert first.status_code == 200
    page = first.json()
    assert len(page["bets"]) == 2
    assert page["bets"][0]["bet_id"] == bet["bet_id"]
    rest = world.http.get(
        f"/v1/accounts/{account_id}/bets",
        params={"after": page["next_after"], "status": "open"},
        headers=bettor,
    ).json()
    assert len(rest["bets"]) == 1
    assert rest["next_after"] is None


def test_market_lifecycle_settles_bets(world: World) -> None:
    trader = world.api.auth("trader")
    http = world.http
    market_id = world.market_id
    winner, loser = world.account(1_000), world.account(1_000)
    bet_ids = {}
    for account_id, selection in ((winner, "home"), (loser, "away")):
        body = world.bet_body(account_id, 100)
        body["legs"] = [{"market_id": market_id, "selection_id": selection, "odds": "1.01"}]
        body["price_change"] = "any"
        response = http.post("/v1/bets", json=body, headers=world.api.auth("bettor", account_id))
        assert response.status_code == 201, response.text
        bet_ids[account_id] = response.json()["bet_id"]

    prices = http.post(
        f"/v1/markets/{market_id}/prices",
        json={"prices": [{"selection_id": "home", "odds": "2.00"}], "reason": "test"},
        headers=trader,
    )
    assert prices.status_code == 200
    market = http.get(f"/v1/markets/{market_id}", headers=trader).json()
    assert market["selections"][0] == {
        "selection_id": "home",
        "name": "Home",
        "odds": "2.00",
        "price": "1/1",
    }
    listed = http.get("/v1/markets", params={"limit": 200}, headers=trader).json()
    assert market_id in {m["market_id"] for m in listed["markets"]} or listed["next_after"]

    for action, status in (("suspend", "suspended"), ("resume", "open"), ("close", "closed")):
        response = http.post(
            f"/v1/markets/{market_id}/{action}", json={"reason": "test"}, headers=trader
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"market_id": market_id, "status": status}

    settled = http.post(
        f"/v1/markets/{market_id}/settle",
        json={"winners": ["home"], "reason": "result"},
        headers=trader,
    )
    assert settled.status_code == 200, settled.text
    assert settled.json()["bets_affected"] == 2
    assert settled.json()["paid_minor"] == 250
    assert world.balance(winner) == 1_150
    assert world.balance(loser) == 900
    won = http.get(f"/v1/bets/{bet_ids[winner]}", headers=trader).json()
    assert won["status"] == "won"
    progress = http.get(f"/v1/markets/{market_id}/progress", headers=trader)
    assert progress.status_code == 200, progress.text
    assert progress.json()["partitions"] == [
        {"partition": partition, "status": "settled", "done_bets": 0, "total_bets": 0}
        for partition in range(world.api.cluster.partitions)
    ]
    missing = http.get("/v1/markets/no-such-market/progress", headers=trader)
    assert missing.status_code == 404, missing.text

    resettled = http.post(
        f"/v1/markets/{market_id}/resettle",
        json={"winners": [{"selection_id": "away"}], "reason": "wrong result entered"},
        headers=trader,
    )
    assert resettled.status_code == 200, resettled.text
    assert world.balance(winner) == 900
    assert world.balance(loser) == 1_200  # "any" price: the away bet got 3.00

    voided = http.post(
        f"/v1/markets/{market_id}/void", json={"reason": "match abandoned"}, headers=trader
    )
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "voided"
    assert world.balance(winner) == 1_000
    assert world.balance(loser) == 1_000


def test_market_without_id_and_listing_pages(api: Api, http: httpx.Client) -> None:
    trader = api.auth("trader")
    created = [create_market(api, http) for _ in range(3)]
    response = http.post(
        "/v1/markets",
        json={
            "event": "ev-2",
            "name": "Winner",
            "reason": "new market",
            "selections": [{"selection_id": "x", "name": "X", "odds": "1.50"}],
        },
        headers=trader,
    )
    assert response.status_code == 201
    assert response.json()["market_id"].startswith("mkt-")
    seen: list[str] = []
    after = None
    for _ in range(100):
        params: dict[str, str | int] = {"limit": 2}
        if after:
            params["after"] = after
        page = http.get("/v1/markets", params=params, headers=api.auth("bettor", "x")).json()
        assert len(page["markets"]) <= 2
        seen.extend(m["market_id"] for m in page["markets"])
        after = page["next_after"]
        if after is None:
            break
    assert set(created) <= set(seen)
    assert len(seen) == len(set(seen))


def test_health_ready_metrics_openapi(api: Api, http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "alive"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    metrics = httpx.get(api.metrics_url, timeout=10)
    assert metrics.status_code == 200
    assert "ironbook_http_requests_total" in metrics.text
    assert http.get("/metrics").status_code == 404, "metrics are on the ops port only"
    schema = http.get("/openapi.json").json()
    assert "/v1/bets" in schema["paths"]
    assert "/v1/markets/{market_id}/settle" in schema["paths"]


def test_transactions_history(world: World) -> None:
    account_id = world.account(1_000)
    http = world.http
    bettor = world.api.auth("bettor", account_id)
    http.post(f"/v1/accounts/{account_id}/withdrawals", json={"amount_minor": 300}, headers=bettor)
    bet = http.post("/v1/bets", json=world.bet_body(account_id, 200), headers=bettor).json()
    expected = [("deposit", 1_000, 1_000), ("withdrawal", -300, 700), ("bet", -200, 500)]
    deadline = time.monotonic() + 10
    while True:
        response = http.get(f"/v1/accounts/{account_id}/transactions", headers=bettor)
        assert response.status_code in (200, 404), response.text
        entries = response.json().get("entries", []) if response.status_code == 200 else []
        if len(entries) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    got = [(e["kind"], e["amount_minor"], e["balance_minor"]) for e in entries]
    assert got == expected
    assert entries[2]["reference"] == bet["bet_id"]
    assert response.json()["as_of_seq"] > 0
    first = http.get(
        f"/v1/accounts/{account_id}/transactions", params={"limit": 2}, headers=bettor
    ).json()
    assert len(first["entries"]) == 2
    rest = http.get(
        f"/v1/accounts/{account_id}/transactions",
        params={"after": first["next_after"]},
        headers=bettor,
    ).json()
    assert [e["kind"] for e in rest["entries"]] == ["bet"]
    assert rest["next_after"] is None
    other = world.api.auth("bettor", "someone-else")
    assert http.get(f"/v1/accounts/{account_id}/transactions", headers=other).status_code == 403
    missing = http.get("/v1/accounts/nobody/transactions", headers=world.api.auth("auditor"))
    assert missing.status_code == 404
    assert missing.json()["code"] == "unknown_account"
