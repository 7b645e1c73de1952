"""The audit trail over HTTP: a bet's receipt verifies offline and fails with
one byte changed; the significant-event log is the auditor's."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
from api_support import World, unique

from ironbook.adapters.audit.keys import load_public_key
from ironbook.adapters.audit.proofs import verify_receipt
from ironbook.cli import main

RECEIPT_WAIT_S = 60.0


def _receipt(world: World, bet_id: str, headers: dict[str, str]) -> httpx.Response:
    """The receipt once a checkpoint covers the bet (409 until then)."""
    deadline = time.monotonic() + RECEIPT_WAIT_S
    while True:
        response = world.http.get(f"/v1/bets/{bet_id}/receipt", headers=headers)
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_bet_receipt_verifies_offline_and_one_changed_byte_fails(
    world: World, tmp_path: Path
) -> None:
    account_id = world.account(balance_minor=1_000)
    bettor = world.api.auth("bettor", account_id)
    placed = world.http.post("/v1/bets", json=world.bet_body(account_id, 200), headers=bettor)
    assert placed.status_code == 201, placed.text
    bet_id = placed.json()["bet_id"]

    response = _receipt(world, bet_id, bettor)
    assert response.status_code == 200, response.text
    body = response.content
    receipt = json.loads(body)
    assert bet_id.encode() in base64.b64decode(receipt["payload_b64"])
    pubkey_file = world.api.data_dir / "audit" / "pubkey"
    assert verify_receipt(load_public_key(pubkey_file), body) is None
    document = tmp_path / "receipt.json"
    document.write_bytes(body)
    assert main(["audit", "verify-receipt", str(document), "--pubkey", str(pubkey_file)]) == 0

    payload = bytearray(base64.b64decode(receipt["payload_b64"]))
    payload[len(payload) // 2] ^= 0x01
    receipt["payload_b64"] = base64.b64encode(bytes(payload)).decode()
    document.write_text(json.dumps(receipt))
    assert main(["audit", "verify-receipt", str(document), "--pubkey", str(pubkey_file)]) == 1

    auditor = _receipt(world, bet_id, world.api.auth("auditor"))
    assert auditor.status_code == 200
    other = world.account()
    assert _receipt(world, bet_id, world.api.auth("bettor", other)).status_code == 404
    assert _receipt(world, bet_id, world.api.auth("trader")).status_code == 403


def _events_of(world: World, kind: str, target: str) -> list[dict[str, object]]:
    """The events of `kind` on `target`, once the log shows one (or the wait ends)."""
    deadline = time.monotonic() + RECEIPT_WAIT_S
    while True:
        response = world.http.get(
            "/v1/audit/events",
            params={"kind": kind, "limit": 200},
            headers=world.api.auth("auditor"),
        )
        assert response.status_code == 200, response.text
        found = [e for e in response.json()["events"] if e["target"] == target]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_failed_authentication_is_a_significant_event(world: World) -> None:
    path = f"/v1/accounts/{unique('probe')}"
    assert world.http.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    failures = _events_of(world, "auth_failure", path)
    assert failures and failures[0]["actor"].startswith("ip:")
    assert failures[0]["detail"] == "GET"


def test_a_staff_deposit_needs_a_reason_and_shows_who_and_why(world: World) -> None:
    account_id = world.account(balance_minor=0)
    cashier = world.api.auth("cashier", sub="cashier:carol")
    path = f"/v1/accounts/{account_id}/deposits"
    for body in ({"amount_minor": 700}, {"amount_minor": 700, "reason": ""}):
        refused = world.http.post(path, json=body, headers=cashier)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "validation_failed"
    assert world.balance(account_id) == 0
    accepted = world.http.post(
        path, json={"amount_minor": 700, "reason": "cash at the counter"}, headers=cashier
    )
    assert accepted.status_code == 201, accepted.text
    [deposit] = _events_of(world, "deposit", f"account {account_id}")
    assert (deposit["actor"], deposit["reason"]) == ("cashier:carol", "cash at the counter")
    # A withdrawal by staff needs one too; the bettor's own does not.
    admin = world.api.auth("admin", sub="admin:ann")
    withdrawals = f"/v1/accounts/{account_id}/withdrawals"
    refused = world.http.post(withdrawals, json={"amount_minor": 100}, headers=admin)
    assert refused.status_code == 422, refused.text
    bettor = world.api.auth("bettor", account_id)
    own = world.http.post(withdrawals, json={"amount_minor": 100}, headers=bettor)
    assert own.status_code == 201, own.text
    assert world.balance(account_id) == 600


def test_a_market_action_needs_a_reason_and_shows_who_and_why(world: World) -> None:
    trader = world.api.auth("trader", sub="trader:tom")
    suspend = f"/v1/markets/{world.market_id}/suspend"
    assert world.http.post(suspend, headers=trader).status_code == 422
    response = world.http.post(suspend, json={"reason": "injury news"}, headers=trader)
    assert response.status_code == 200, response.text
    [suspended] = [
        e
        for e in _events_of(world, "market_status", f"market {world.market_id}")
        if e["reason"] == "injury news"
    ]
    assert suspended["actor"] == "trader:tom"


def test_the_significant_event_log_is_the_auditors(world: World) -> None:
    auditor = world.api.auth("auditor")
    account_id = world.account(balance_minor=500)  # a cashier's deposit
    deposits = _events_of(world, "deposit", f"account {account_id}")
    assert deposits
    assert deposits[0]["source"].startswith("ledger/")

    leaders = world.http.get(
        "/v1/audit/events", params={"kind": "leader_elected"}, headers=auditor
    ).json()["events"]
    assert leaders and leaders[0]["target"].startswith("partition ")
    first = leaders[0]["seq"]
    later = world.http.get(
        "/v1/audit/events", params={"after": first, "from": "2000-01-01"}, headers=auditor
    )
    assert later.status_code == 200
    assert all(e["seq"] > first for e in later.json()["events"])
    assert (
        world.http.get(
            "/v1/audit/events", params={"from": "yesterday"}, headers=auditor
        ).status_code
        == 422
    )
    assert (
        world.http.get("/v1/audit/events", headers=world.api.auth("bettor", account_id)).status_code
        == 403
    )
