"""The alert receiver and ops console without a cluster: Alertmanager's
webhook body (firing and resolved) is recorded to the file, published and
kept in the firing book; bad bodies are refused (400) and change nothing;
the console needs an admin or auditor token checked by the gateway's
verifier; the generated Alertmanager config routes to the receiver with
grouping and inhibition."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from ironbook.services.gateway.auth import (
    SigningKey,
    load_or_create_signing_key,
    load_verifier,
    mint_token,
)
from ironbook.services.monitoring import WEBHOOK_PATH, alertmanager_config
from ironbook.services.ops.alerts import AlertBook, AlertRecord, alert_spans
from ironbook.services.ops.console import SESSION_COOKIE, Console, create_app


def _notification(status: str, alertname: str = "IronbookReplicaDown") -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "ironbook",
        "groupKey": "{}:{alertname}",
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": alertname, "severity": "page", "name": "p0-r2"},
                "annotations": {"summary": "down"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://x/graph",
                "fingerprint": "f1",
            }
        ],
    }


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create_signing_key(tmp_path / "keys")


@pytest.fixture
def noted() -> list[tuple[str, str, str, str, str]]:
    """The significant events the console noted: (kind, actor, reason, target, detail)."""
    return []


@pytest.fixture
def receiver(
    tmp_path: Path, key: SigningKey, noted: list[tuple[str, str, str, str, str]]
) -> tuple[TestClient, Console, list[AlertRecord]]:
    published: list[AlertRecord] = []

    def note_event(
        kind: str,
        actor: str,
        reason: str,
        target: str,
        detail: str = "",
        *,
        msg_id: str | None = None,
    ) -> None:
        noted.append((kind, actor, reason, target, detail))

    async def publish(record: AlertRecord) -> None:
        published.append(record)

    async def read_cluster() -> dict[str, Any]:
        return {"replicas": []}

    console = Console(
        AlertBook(tmp_path / "alerts.jsonl"), read_cluster, publish, links={}, note_event=note_event
    )
    verifier = load_verifier(algorithm="HS256", keys_dir=tmp_path / "keys")
    return TestClient(create_app(console, verifier)), console, published


def test_firing_then_resolved_is_recorded_published_and_kept(
    receiver: tuple[TestClient, Console, list[AlertRecord]],
    noted: list[tuple[str, str, str, str, str]],
    tmp_path: Path,
) -> None:
    client, console, published = receiver
    assert client.post(WEBHOOK_PATH, json=_notification("firing")).status_code == 200
    assert [r.alertname for r in console.book.firing_now()] == ["IronbookReplicaDown"]
    assert client.post(WEBHOOK_PATH, json=_notification("resolved")).status_code == 200
    assert list(console.book.firing_now()) == []
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["firing", "resolved"]
    assert lines[0]["labels"]["name"] == "p0-r2" and lines[0]["severity"] == "page"
    assert [r.status for r in published] == ["firing", "resolved"]
    # Each alert of each notification is a significant event.
    assert [(kind, actor, reason, target) for kind, actor, reason, target, _ in noted] == [
        ("alert", "alertmanager", "IronbookReplicaDown firing: down", "name=p0-r2"),
        ("alert", "alertmanager", "IronbookReplicaDown resolved: down", "name=p0-r2"),
    ]
    assert "severity page" in noted[0][4] and "fingerprint f1" in noted[0][4]
    metrics = client.get("/metrics").text
    assert 'ironbook_alerts_received_total{status="resolved"} 1.0' in metrics
    assert "ironbook_alerts_firing 0.0" in metrics


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": "4", "status": "firing"}',
        json.dumps({**_notification("firing"), "status": "exploded"}).encode(),
        json.dumps(
            {**_notification("firing"), "alerts": [{"status": "firing", "labels": {}}]}
        ).encode(),
        b"[" * 100_000,
    ],
)
def test_a_bad_notification_is_refused_and_changes_nothing(
    receiver: tuple[TestClient, Console, list[AlertRecord]],
    noted: list[tuple[str, str, str, str, str]],
    tmp_path: Path,
    body: bytes,
) -> None:
    client, console, published = receiver
    response = client.post(WEBHOOK_PATH, content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_notification"
    assert (tmp_path / "alerts.jsonl").read_text() == ""
    assert not published and not noted and not console.book.firing


def test_the_console_needs_an_admin_or_auditor_token(
    receiver: tuple[TestClient, Console, list[AlertRecord]], key: SigningKey
) -> None:
    client, _, _ = receiver
    assert client.get("/console").status_code == 200
    assert client.get("/console/state").status_code == 401
    bettor = mint_token(key, role="bettor", account_id="a1")
    assert client.post("/console/login", json={"token": bettor}).status_code == 403
    assert client.post("/console/login", json={"token": "nonsense"}).status_code == 401
    assert client.post("/console/login", content=b"{").status_code == 400
    assert client.get("/console/state").status_code == 401
    for role in ("auditor", "admin"):
        client.cookies.clear()
        login = client.post("/console/login", json={"token": mint_token(key, role=role)})
        assert login.status_code == 200 and SESSION_COOKIE in login.cookies
        client.post(WEBHOOK_PATH, json=_notification("firing", "IronbookFeedStale"))
        state = client.get("/console/state").json()
        assert [a["alertname"] for a in state["firing"]] == ["IronbookFeedStale"]


def test_the_console_refreshes_from_prometheus_and_wakes_its_viewers(
    receiver: tuple[TestClient, Console, list[AlertRecord]],
) -> None:
    _, console, _ = receiver

    async def scenario() -> None:
        seen = console.version
        async with asyncio.TaskGroup() as group:
            refresher = group.create_task(console.refresh_forever())
            await asyncio.wait_for(console.wait_change(seen, 5), 6)
            refresher.cancel()
        assert console.version > seen and console.cluster == {"replicas": []}

    asyncio.run(scenario())


def test_alertmanager_routes_everything_to_the_receiver_with_inhibition() -> None:
    config = alertmanager_config("http://127.0.0.1:1" + WEBHOOK_PATH)
    route = config["route"]
    assert isinstance(route, dict) and route["receiver"] == "ironbook"
    (receiver,) = config["receivers"]  # type: ignore[misc]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["send_resolved"] is True and webhook["url"].endswith(WEBHOOK_PATH)
    inhibit = config["inhibit_rules"]
    assert isinstance(inhibit, list)
    node_down = [rule for rule in inhibit if "node" in rule.get("equal", [])]
    assert node_down and 'alertname="IronbookNatsServerDown"' in node_down[0]["source_matchers"]


def _record(at_ms: int, status: str, fingerprint: str) -> AlertRecord:
    return AlertRecord(
        received_at_ms=at_ms,
        status=status,  # type: ignore[arg-type]
        alertname=f"Alert{fingerprint}",
        severity="page",
        fingerprint=fingerprint,
        labels={},
        annotations={},
        starts_at="",
        ends_at="",
    )


def test_each_spell_of_an_alert_is_its_first_firing_and_its_resolution() -> None:
    records = [
        _record(1_000, "firing", "a"),
        _record(2_000, "firing", "b"),
        _record(3_000, "firing", "a"),  # sent again with its group: the same spell
        _record(4_000, "resolved", "a"),
        _record(5_000, "resolved", "c"),  # never seen firing: no spell
        _record(6_000, "firing", "a"),  # fires again: a new spell
    ]
    spans = [
        (first.fingerprint, first.received_at_ms, resolved)
        for first, resolved in alert_spans(records)
    ]
    assert spans == [("a", 1_000, 4_000), ("b", 2_000, None), ("a", 6_000, None)]
