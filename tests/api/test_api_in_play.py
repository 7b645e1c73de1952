"""Issue-6 additions to the API: in-play bets held for the market's bet delay
(`pending`, then `open` or `rejected` with a reason), markets owned by a feed
producer (suspended while it is down), settlement rollback, and voiding only
the bets placed in a time window."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from api_support import Api, World, unique

from ironbook import core
from ironbook.client import connect_ledger
from ironbook.core import acting

SETTLED_WITHIN_S = 20.0


def _in_play_market(api: Api, http: httpx.Client, delay_s: int, **extra: object) -> str:
    market_id = unique("live")
    response = http.post(
        "/v1/markets",
        json={
            "market_id": market_id,
            "event": "ev-live",
            "name": "Next goal",
            "reason": "new market",
            "selections": [
                {"selection_id": "home", "name": "Home", "odds": "2.50"},
                {"selection_id": "away", "name": "Away", "odds": "3.00"},
            ],
            "in_play": True,
            "bet_delay_s": delay_s,
            **extra,
        },
        headers=api.auth("trader"),
    )
    assert response.status_code == 201, response.text
    return market_id


def _bet(world: World, account_id: str, market_id: str, stake_minor: int = 100) -> Any:
    body = {
        "account_id": account_id,
        "stake_minor": stake_minor,
        "legs": [{"market_id": market_id, "selection_id": "home", "odds": "2.50"}],
    }
    response = world.http.post("/v1/bets", json=body, headers=world.api.auth("bettor", account_id))
    assert response.status_code == 201, response.text
    return response.json()


def _read_bet(world: World, bet_id: str) -> Any:
    response = world.http.get(f"/v1/bets/{bet_id}", headers=world.api.auth("auditor"))
    assert response.status_code == 200, response.text
    return response.json()


def _released(world: World, bet_id: str) -> Any:
    """The bet once its delay is over (bounded wait: the leader releases held
    bets within a fraction of a second of their time)."""
    deadline = time.monotonic() + SETTLED_WITHIN_S
    while time.monotonic() < deadline:
        bet = _read_bet(world, bet_id)
        if bet["status"] != "pending":
            return bet
        time.sleep(0.1)
    raise AssertionError(f"bet {bet_id} still pending after {SETTLED_WITHIN_S} s")


def test_in_play_bet_is_pending_then_accepted(world: World) -> None:
    market_id = _in_play_market(world.api, world.http, delay_s=1)
    account_id = world.account(1_000)
    placed = _bet(world, account_id, market_id)
    assert placed["status"] == "pending"
    assert placed["balance_minor"] == 900
    assert _read_bet(world, placed["bet_id"])["status"] in ("pending", "open")
    bet = _released(world, placed["bet_id"])
    assert bet["status"] == "open"
    assert bet["reject_code"] is None
    assert world.balance(account_id) == 900
    listed = world.http.get(
        f"/v1/accounts/{account_id}/bets",
        params={"status": "open"},
        headers=world.api.auth("bettor", account_id),
    ).json()
    assert [b["bet_id"] for b in listed["bets"]] == [placed["bet_id"]]


def test_in_play_bet_rejected_when_the_market_moves_during_the_delay(world: World) -> None:
    market_id = _in_play_market(world.api, world.http, delay_s=3)
    account_id = world.account(1_000)
    placed = _bet(world, account_id, market_id)
    assert placed["status"] == "pending"
    suspended = world.http.post(
        f"/v1/markets/{market_id}/suspend",
        json={"reason": "test"},
        headers=world.api.auth("trader"),
    )
    assert suspended.status_code == 200, suspended.text
    bet = _released(world, placed["bet_id"])
    assert bet["status"] == "rejected"
    assert bet["reject_code"] == "market_suspended"
    assert world.balance(account_id) == 1_000, "the stake of a rejected bet is refunded"
    # The refund is in the account's history, against the bet.
    bettor = world.api.auth("bettor", account_id)
    expected = [("deposit", 1_000, 1_000), ("bet", -100, 900), ("bet_refund", 100, 1_000)]
    deadline = time.monotonic() + 10
    while True:
        response = world.http.get(f"/v1/accounts/{account_id}/transactions", headers=bettor)
        assert response.status_code in (200, 404), response.text
        entries = response.json().get("entries", []) if response.status_code == 200 else []
        if len(entries) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(e["kind"], e["amount_minor"], e["balance_minor"]) for e in entries] == expected
    assert entries[2]["reference"] == placed["bet_id"]


def test_market_of_a_producer_that_goes_down_takes_no_bets(api: Api, world: World) -> None:
    producer = unique("feed")
    market_id = _in_play_market(api, world.http, delay_s=0, producer=producer)
    trader = api.auth("trader")
    market = world.http.get(f"/v1/markets/{market_id}", headers=trader).json()
    assert (market["producer"], market["producer_down"], market["status"]) == (
        producer,
        False,
        "open",
    )
    hand_traded = world.http.get(f"/v1/markets/{world.market_id}", headers=trader).json()
    assert hand_traded["producer"] is None

    async def set_down(down: bool) -> None:
        client = await connect_ledger(
            api.cluster.ops, partitions=api.cluster.partitions, issuer=acting("test")
        )
        try:
            command = core.SetProducerStatus(
                request_id=unique("producer"), producer=producer, down=down
            )
            outcome = await client.submit(command)
            assert isinstance(outcome, core.Accepted), outcome
        finally:
            await client.close()

    account_id = world.account(1_000)
    asyncio.run(set_down(True))
    market = world.http.get(f"/v1/markets/{market_id}", headers=trader).json()
    assert (market["producer_down"], market["status"]) == (True, "suspended")
    body = {
        "account_id": account_id,
        "stake_minor": 100,
        "legs": [{"market_id": market_id, "selection_id": "home", "odds": "2.50"}],
    }
    refused = world.http.post("/v1/bets", json=body, headers=api.auth("bettor", account_id))
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "market_suspended"
    asyncio.run(set_down(False))
    assert _bet(world, account_id, market_id)["status"] == "open"
    assert world.balance(account_id) == 900


def test_rollback_reopens_a_settled_market_for_a_new_result(world: World) -> None:
    account_id = world.account(1_000)
    _bet(world, account_id, world.market_id)
    trader = world.api.auth("trader")
    http = world.http
    market = f"/v1/markets/{world.market_id}"
    assert http.post(f"{market}/close", json={"reason": "test"}, headers=trader).status_code == 200
    settled = http.post(
        f"{market}/settle", json={"winners": ["home"], "reason": "result"}, headers=trader
    )
    assert settled.json()["paid_minor"] == 250, settled.text
    assert world.balance(account_id) == 1_150

    missing_reason = http.post(f"{market}/rollback", json={}, headers=trader)
    assert missing_reason.status_code == 422, missing_reason.text
    rolled = http.post(f"{market}/rollback", json={"reason": "wrong result"}, headers=trader)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["status"] == "closed"
    assert rolled.json()["bets_affected"] == 1
    assert world.balance(account_id) == 900, "the payout is taken back, the bet is open"
    again = http.post(f"{market}/rollback", json={"reason": "twice"}, headers=trader)
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "invalid_status_change"

    resettled = http.post(
        f"{market}/settle", json={"winners": ["away"], "reason": "result"}, headers=trader
    )
    assert resettled.status_code == 200, resettled.text
    assert world.balance(account_id) == 900


def test_void_a_window_of_bets_only(world: World) -> None:
    account_id = world.account(1_000)
    first = _bet(world, account_id, world.market_id)
    first_ms = _read_bet(world, first["bet_id"])["placed_ms"]
    time.sleep(0.01)  # so that the two bets do not share a log millisecond
    later = _bet(world, account_id, world.market_id)
    later_ms = _read_bet(world, later["bet_id"])["placed_ms"]
    assert later_ms > first_ms
    trader = world.api.auth("trader")
    market = f"/v1/markets/{world.market_id}"
    empty = world.http.post(
        f"{market}/void",
        json={"reason": "bad window", "placed_from_ms": later_ms, "placed_to_ms": later_ms},
        headers=trader,
    )
    assert empty.status_code == 422, empty.text
    assert empty.json()["code"] == "invalid_window"
    voided = world.http.post(
        f"{market}/void",
        json={"reason": "feed delay", "placed_from_ms": later_ms},
        headers=trader,
    )
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "open", "a window leaves the market as it is"
    assert voided.json()["bets_affected"] == 1
    assert _read_bet(world, first["bet_id"])["status"] == "open"
    assert _read_bet(world, later["bet_id"])["status"] == "void"
    assert world.balance(account_id) == 900
