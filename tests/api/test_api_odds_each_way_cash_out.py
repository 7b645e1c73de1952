"""Exact fractional odds, market ladders, each-way and cash-out through the
public API."""

from __future__ import annotations

import asyncio
import time

import httpx
from api_support import Api, World, unique


def fractional_race(api: Api, http: httpx.Client, **odds: str) -> str:
    market_id = unique("race")
    response = http.post(
        "/v1/markets",
        json={
            "market_id": market_id,
            "event": "ev-race",
            "name": "2:30 Ascot",
            "reason": "new market",
            "selections": [
                {"selection_id": s, "name": s.upper(), "odds": o} for s, o in odds.items()
            ],
            "ladder": {"kind": "fractional", "display": "fractional"},
            "place_terms": {"fraction": "1/5", "places": 3},
        },
        headers=api.auth("trader"),
    )
    assert response.status_code == 201, response.text
    return market_id


def each_way_bet(world: World, account_id: str, market_id: str, selection: str, odds: str) -> str:
    response = world.http.post(
        "/v1/bets",
        json={
            "account_id": account_id,
            "stake_minor": 1_000,
            "legs": [{"market_id": market_id, "selection_id": selection, "odds": odds}],
            "each_way": True,
        },
        headers=world.api.auth("bettor", account_id),
    )
    assert response.status_code == 201, response.text
    bet_id: str = response.json()["bet_id"]
    return bet_id


def settle(world: World, market_id: str, winners: list[dict[str, object]]) -> None:
    trader = world.api.auth("trader")
    response = world.http.post(
        f"/v1/markets/{market_id}/close", json={"reason": "test"}, headers=trader
    )
    assert response.status_code == 200, response.text
    response = world.http.post(
        f"/v1/markets/{market_id}/settle",
        json={"winners": winners, "reason": "result"},
        headers=trader,
    )
    assert response.status_code == 200, response.text


def test_a_fractional_market_shows_its_ladder_and_pays_the_exact_price(
    api: Api, world: World
) -> None:
    market_id = fractional_race(api, world.http, a="13/8", b="100/30", c="2/7")
    view = world.http.get(f"/v1/markets/{market_id}", headers=api.auth("auditor")).json()
    assert view["ladder"]["kind"] == "fractional"
    assert view["place_terms"] == {"fraction": "1/5", "places": 3}
    shown = {s["selection_id"]: (s["odds"], s["price"]) for s in view["selections"]}
    assert shown == {"a": ("13/8", "13/8"), "b": ("100/30", "10/3"), "c": ("2/7", "2/7")}
    account_id = world.account(20_000)
    response = world.http.post(
        "/v1/bets",
        json={
            "account_id": account_id,
            "stake_minor": 10_000,
            "legs": [{"market_id": market_id, "selection_id": "a", "odds": "13/8"}],
        },
        headers=api.auth("bettor", account_id),
    )
    assert response.status_code == 201, response.text
    assert response.json()["potential_payout_minor"] == 26_250
    settle(world, market_id, ["a"])
    assert world.balance(account_id) == 10_000 + 26_250


def test_a_trader_quotes_10_3_and_100_30_but_not_off_the_ladder(api: Api, world: World) -> None:
    market_id = fractional_race(api, world.http, a="5/2", b="evs")
    trader = api.auth("trader")
    for quoted in ("10/3", "100/30"):
        response = world.http.post(
            f"/v1/markets/{market_id}/prices",
            json={"prices": [{"selection_id": "a", "odds": quoted}], "reason": "test"},
            headers=trader,
        )
        assert response.status_code == 200, response.text
    response = world.http.post(
        f"/v1/markets/{market_id}/prices",
        json={"prices": [{"selection_id": "a", "odds": "4.33"}], "reason": "test"},
        headers=trader,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "off_ladder"
    # The exchange ladder still works for markets that declare it (the default).
    response = world.http.post(
        f"/v1/markets/{world.market_id}/prices",
        json={"prices": [{"selection_id": "home", "odds": "2.52"}], "reason": "test"},
        headers=trader,
    )
    assert response.status_code == 200, response.text


def test_5_1_each_way_ten_pounds_at_a_fifth_three_places(api: Api, world: World) -> None:
    """Placed 2nd returns £20, 1st returns £80, a dead heat for the last
    place halves the place part (£10)."""
    cases = (
        ([{"selection_id": "b"}, {"selection_id": "a", "position": 2}], 2_000),
        ([{"selection_id": "a"}, {"selection_id": "b", "position": 2}], 8_000),
        (
            [
                {"selection_id": "b"},
                {"selection_id": "c", "position": 2},
                {"selection_id": "a", "position": 3, "dead_heat": 2},
                {"selection_id": "d", "position": 3, "dead_heat": 2},
            ],
            1_000,
        ),
    )
    for winners, returned in cases:
        market_id = fractional_race(api, world.http, a="5/1", b="2/1", c="7/2", d="10/1")
        account_id = world.account(5_000)
        bet_id = each_way_bet(world, account_id, market_id, "a", "5/1")
        assert world.balance(account_id) == 3_000  # £10 win + £10 place
        settle(world, market_id, winners)
        bet = world.http.get(f"/v1/bets/{bet_id}", headers=api.auth("auditor")).json()
        assert bet["each_way"] is True
        assert bet["payout_minor"] == returned
        assert world.balance(account_id) == 3_000 + returned


def test_a_cash_out_quote_accepted_by_20_concurrent_retries_pays_once(
    api: Api, world: World
) -> None:
    market_id = fractional_race(api, world.http, a="5/1", b="2/1")
    account_id = world.account(5_000)
    bet_id = each_way_bet(world, account_id, market_id, "a", "5/1")
    bettor = api.auth("bettor", account_id)
    response = world.http.get(f"/v1/bets/{bet_id}/cash-out", headers=bettor)
    assert response.status_code == 200, response.text
    quote = response.json()
    assert 0 < quote["amount_minor"] < 2_000
    body = {"quote_id": quote["quote_id"], "amount_minor": quote["amount_minor"]}
    headers = api.auth("bettor", account_id, key=unique("cash-out"))

    async def retries() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as client:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        client.post(f"/v1/bets/{bet_id}/cash-out", json=body, headers=headers)
                    )
                    for _ in range(20)
                ]
            return [task.result() for task in tasks]

    responses = asyncio.run(retries())
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    assert responses[0].json()["status"] == "cashed_out"
    assert world.balance(account_id) == 3_000 + quote["amount_minor"]
    bet = world.http.get(f"/v1/bets/{bet_id}", headers=api.auth("auditor")).json()
    assert (bet["status"], bet["cashed_out_minor"]) == ("cashed_out", quote["amount_minor"])
    # A new request with the same quote: the bet is no longer open.
    again = world.http.post(f"/v1/bets/{bet_id}/cash-out", json=body, headers=bettor)
    assert again.status_code == 409
    assert again.json()["code"] == "cash_out_unavailable"
    # A later result does not touch it.
    settle(world, market_id, ["a"])
    assert world.balance(account_id) == 3_000 + quote["amount_minor"]
    # The account's history shows the cash-out once.
    expected = [
        ("deposit", 5_000, 5_000),
        ("bet", -2_000, 3_000),
        ("cash_out", quote["amount_minor"], 3_000 + quote["amount_minor"]),
    ]
    deadline = time.monotonic() + 10
    while True:
        response = world.http.get(f"/v1/accounts/{account_id}/transactions", headers=bettor)
        entries = response.json().get("entries", []) if response.status_code == 200 else []
        if len(entries) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(e["kind"], e["amount_minor"], e["balance_minor"]) for e in entries] == expected


def test_cash_out_is_refused_while_the_market_is_suspended(api: Api, world: World) -> None:
    market_id = fractional_race(api, world.http, a="5/1", b="2/1")
    account_id = world.account(5_000)
    bet_id = each_way_bet(world, account_id, market_id, "a", "5/1")
    bettor = api.auth("bettor", account_id)
    quote = world.http.get(f"/v1/bets/{bet_id}/cash-out", headers=bettor).json()
    response = world.http.post(
        f"/v1/markets/{market_id}/suspend", json={"reason": "test"}, headers=api.auth("trader")
    )
    assert response.status_code == 200, response.text
    response = world.http.get(f"/v1/bets/{bet_id}/cash-out", headers=bettor)
    assert response.status_code == 409
    assert response.json()["code"] == "cash_out_unavailable"
    response = world.http.post(
        f"/v1/bets/{bet_id}/cash-out",
        json={"quote_id": quote["quote_id"], "amount_minor": quote["amount_minor"]},
        headers=bettor,
    )
    assert response.status_code == 409
    assert world.balance(account_id) == 3_000


def test_partial_cash_out_and_another_bettors_bet(api: Api, world: World) -> None:
    market_id = fractional_race(api, world.http, a="5/1", b="2/1")
    account_id = world.account(5_000)
    bet_id = each_way_bet(world, account_id, market_id, "a", "5/1")
    bettor = api.auth("bettor", account_id)
    quote = world.http.get(
        f"/v1/bets/{bet_id}/cash-out", params={"stake_fraction": "0.5"}, headers=bettor
    ).json()
    assert quote["stake_minor"] == 500
    response = world.http.post(
        f"/v1/bets/{bet_id}/cash-out",
        json={
            "quote_id": quote["quote_id"],
            "amount_minor": quote["amount_minor"],
            "stake_fraction": "0.5",
        },
        headers=bettor,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["stake_minor"]) == ("open", 500)
    other = world.account(0)
    response = world.http.get(f"/v1/bets/{bet_id}/cash-out", headers=api.auth("bettor", other))
    assert response.status_code == 404
    settle(world, market_id, ["a"])
    # £5 each way at 5/1 wins: 30 + 10.
    assert world.balance(account_id) == 3_000 + quote["amount_minor"] + 4_000
