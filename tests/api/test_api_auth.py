"""Authentication and every role boundary."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from api_support import Api, World

from ironbook.services.gateway.auth import mint_token


def _unsigned(claims: dict[str, object]) -> str:
    """A token with `alg: none`: it must never be accepted."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


SETTLE = ("POST", "/v1/markets/{market}/settle", {"winners": ["home"], "reason": "result"})


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer " + jwt.encode({"sub": "x", "role": "admin", "exp": 2**40}, "wrong-secret" * 4),
        "Bearer " + _unsigned({"sub": "x", "role": "admin", "exp": 2**40}),
    ],
)
def test_missing_or_invalid_token_is_401(http: httpx.Client, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get("/v1/markets", headers=headers)
    _problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _signed(api: Api, claims: dict[str, object], kid: str | None = None) -> str:
    key = api.secret
    return jwt.encode(claims, key.secret, "HS256", headers={"kid": kid or key.kid})


def test_expired_and_malformed_claims_are_401(api: Api, http: httpx.Client) -> None:
    now = int(time.time())
    good = {"sub": "x", "role": "admin", "iat": now, "exp": now + 600, "jti": "j-good"}
    assert http.get("/v1/markets", headers={"Authorization": f"Bearer {_signed(api, good)}"})
    refused = [
        mint_token(api.secret, role="admin", ttl_s=1, now_s=now - 3600),
        _signed(api, {**good, "role": "root"}),
        _signed(api, {**good, "role": "bettor"}),  # without account_id
        _signed(api, {name: v for name, v in good.items() if name != "exp"}),
        _signed(api, {name: v for name, v in good.items() if name != "jti"}),
        _signed(api, {name: v for name, v in good.items() if name != "iat"}),
        _signed(api, good, kid="k-unknown"),
        jwt.encode(good, api.secret.secret, "HS256"),  # no kid
    ]
    for token in refused:
        _problem(
            http.get("/v1/markets", headers={"Authorization": f"Bearer {token}"}),
            401,
            "unauthorized",
        )


@pytest.mark.parametrize(
    ("role", "account_id", "lifetime_s"),
    [("admin", None, 30 * 86_400), ("cashier", None, 7_200), ("bettor", "acc-1", 2 * 86_400)],
)
def test_a_token_living_longer_than_its_role_may_is_refused(
    api: Api, http: httpx.Client, role: str, account_id: str | None, lifetime_s: int
) -> None:
    """Signed with the right key, not expired, but minted for longer than the
    gateways accept for the role (bettor 24 h, staff 1 h)."""
    token = mint_token(api.secret, role=role, account_id=account_id, ttl_s=lifetime_s)
    response = http.get("/v1/markets", headers={"Authorization": f"Bearer {token}"})
    _problem(response, 401, "unauthorized")


def test_failed_auth_is_a_security_event(api: Api, http: httpx.Client) -> None:
    http.get("/v1/markets", headers={"Authorization": "Bearer forged.token.here"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        logs = "".join(
            path.read_text(errors="replace") for path in (api.data_dir / "logs").glob("gw-*.log")
        )
        if '"logger": "ironbook.security"' in logs and "auth_failed" in logs:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no security event logged for a forged token")
    metrics = httpx.get(api.metrics_url, timeout=10).text
    assert "ironbook_gateway_auth_failures_total" in metrics


def test_bettor_cannot_touch_another_account(world: World) -> None:
    mine, theirs = world.account(1_000), world.account(1_000)
    bettor = world.api.auth("bettor", mine)
    http = world.http
    _problem(http.get(f"/v1/accounts/{theirs}", headers=bettor), 403, "forbidden")
    _problem(http.get(f"/v1/accounts/{theirs}/bets", headers=bettor), 403, "forbidden")
    _problem(
        http.post(f"/v1/accounts/{theirs}/withdrawals", json={"amount_minor": 10}, headers=bettor),
        403,
        "forbidden",
    )
    _problem(
        http.put(f"/v1/accounts/{theirs}/limits", json={"day_minor": 1}, headers=bettor),
        403,
        "forbidden",
    )
    _problem(
        http.post(f"/v1/accounts/{theirs}/self-exclusion", json={"days": 1}, headers=bettor),
        403,
        "forbidden",
    )
    _problem(http.post("/v1/bets", json=world.bet_body(theirs), headers=bettor), 403, "forbidden")
    their_bet = http.post(
        "/v1/bets", json=world.bet_body(theirs), headers=world.api.auth("bettor", theirs)
    ).json()["bet_id"]
    _problem(http.get(f"/v1/bets/{their_bet}", headers=bettor), 404, "unknown_bet")
    assert world.balance(theirs) == 900


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("bettor", *SETTLE),
        ("cashier", *SETTLE),
        ("auditor", *SETTLE),
        ("bettor", "POST", "/v1/markets/{market}/suspend", {"reason": "x"}),
        ("cashier", "POST", "/v1/markets/{market}/void", {"reason": "x"}),
        ("bettor", "POST", "/v1/markets/{market}/rollback", {"reason": "x"}),
        ("auditor", "POST", "/v1/markets/{market}/rollback", {"reason": "x"}),
        (
            "bettor",
            "POST",
            "/v1/markets/{market}/prices",
            {"prices": [{"selection_id": "home", "odds": "2.00"}], "reason": "test"},
        ),
        ("bettor", "POST", "/v1/accounts", {}),
        ("trader", "POST", "/v1/accounts", {}),
        ("cashier", "POST", "/v1/accounts", {}),
        (
            "bettor",
            "POST",
            "/v1/accounts/{account}/deposits",
            {"amount_minor": 10, "reason": "test top-up"},
        ),
        (
            "auditor",
            "POST",
            "/v1/accounts/{account}/deposits",
            {"amount_minor": 10, "reason": "test top-up"},
        ),
        (
            "trader",
            "POST",
            "/v1/accounts/{account}/deposits",
            {"amount_minor": 10, "reason": "test top-up"},
        ),
        (
            "cashier",
            "POST",
            "/v1/accounts/{account}/withdrawals",
            {"amount_minor": 10, "reason": "r"},
        ),
        ("trader", "GET", "/v1/accounts/{account}", None),
        ("admin", "PUT", "/v1/accounts/{account}/limits", {"day_minor": 1}),
        ("admin", "POST", "/v1/bets", "bet"),
        ("trader", "POST", "/v1/bets", "bet"),
        ("cashier", "POST", "/v1/markets", "market"),
        ("auditor", "POST", "/v1/markets", "market"),
    ],
)
def test_role_boundaries(world: World, role: str, method: str, path: str, body: object) -> None:
    account_id = world.account(1_000)
    path = path.format(market=world.market_id, account=account_id)
    if body == "bet":
        body = world.bet_body(account_id)
    elif body == "market":
        body = {
            "event": "e",
            "name": "n",
            "selections": [{"selection_id": "a", "name": "A", "odds": "2.00"}],
            "reason": "new market",
        }
    headers = world.api.auth(role, account_id if role == "bettor" else None)
    if role == "bettor":
        # Its own account, yet still not allowed: the role decides, not ownership.
        headers = world.api.auth("bettor", "someone-else")
    response = world.http.request(method, path, json=body, headers=headers)
    _problem(response, 403, "forbidden")
    market = world.http.get(
        f"/v1/markets/{world.market_id}", headers=world.api.auth("trader")
    ).json()
    assert market["status"] == "open"
    assert world.balance(account_id) == 1_000


def test_staff_roles_can_do_their_jobs(world: World) -> None:
    account_id = world.account(0)
    http = world.http
    for role in ("admin", "cashier"):
        response = http.post(
            f"/v1/accounts/{account_id}/deposits",
            json={"amount_minor": 100, "reason": "test top-up"},
            headers=world.api.auth(role),
        )
        assert response.status_code == 201
    for role in ("admin", "cashier", "auditor"):
        assert http.get(f"/v1/accounts/{account_id}", headers=world.api.auth(role)).is_success
    admin_withdrawal = http.post(
        f"/v1/accounts/{account_id}/withdrawals",
        json={"amount_minor": 50, "reason": "paid out at the counter"},
        headers=world.api.auth("admin"),
    )
    assert admin_withdrawal.status_code == 201
    for role in ("admin", "trader"):
        response = http.post(
            f"/v1/markets/{world.market_id}/suspend",
            json={"reason": "test"},
            headers=world.api.auth(role),
        )
        assert response.status_code in (200, 409)
