"""Planned maintenance is announced, not paged, in a real Alertmanager
running the configuration `ironbook up` generates: while a process's
`IronbookMaintenance` notice lasts, the page and ticket alerts about that
process are inhibited (not sent) and those about any other process are not;
when the notice ends, they are sent again. An Alertmanager that cannot be
reached does not stop the work."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook.adapters.prometheus import (
    LocalAlertmanager,
    MonitoringBinaryMissing,
    binary,
    post_alerts,
    rfc3339,
)
from ironbook.services import maintenance
from ironbook.services.monitoring import WEBHOOK_PATH, alertmanager_config

WAIT_S = 30.0


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[LocalAlertmanager]:
    try:
        binary("prometheus-alertmanager", "alertmanager")
    except MonitoringBinaryMissing as err:
        if os.geteuid() == 0:
            pytest.fail(f"{err} although we run as root: run deploy/install-monitoring.sh")
        pytest.skip(str(err))
    # The receiver's URL leads nowhere: only Alertmanager's own view is judged.
    manager = LocalAlertmanager(
        tmp_path / "alertmanager", alertmanager_config("http://127.0.0.1:9" + WEBHOOK_PATH)
    )
    manager.start()
    try:
        yield manager
    finally:
        manager.close()


def _page(name: str, alertname: str = "IronbookReplicaDown") -> dict[str, object]:
    now = time.time()
    return {
        "labels": {"alertname": alertname, "severity": "page", "name": name},
        "annotations": {"summary": f"{name} is down"},
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + 300),
    }


def _states(manager: LocalAlertmanager) -> dict[tuple[str, str], str]:
    """(alertname, name) -> `active` or `suppressed`, of the alerts still firing."""
    return {
        (str(a["labels"]["alertname"]), str(a["labels"].get("name"))): str(a["status"]["state"])
        for a in manager.alerts()
    }


def _wait_states(
    manager: LocalAlertmanager, expected: dict[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    deadline = time.monotonic() + WAIT_S
    while True:
        states = _states(manager)
        if all(states.get(key) == state for key, state in expected.items()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def test_a_notice_inhibits_only_its_own_process(alertmanager: LocalAlertmanager) -> None:
    asyncio.run(maintenance.announce(alertmanager.url, "p0-r1", "restart", 300))
    post_alerts(alertmanager.url, [_page("p0-r1"), _page("p0-r2")])
    post_alerts(alertmanager.url, [_page("p0-r1", "IronbookReplicaLagging")])
    states = _wait_states(
        alertmanager,
        {
            ("IronbookMaintenance", "p0-r1"): "active",
            ("IronbookReplicaDown", "p0-r1"): "suppressed",
            ("IronbookReplicaLagging", "p0-r1"): "suppressed",
            ("IronbookReplicaDown", "p0-r2"): "active",
        },
    )
    assert len(states) == 4
    notice = next(
        a for a in alertmanager.alerts() if a["labels"]["alertname"] == "IronbookMaintenance"
    )
    assert notice["labels"] == {
        "alertname": "IronbookMaintenance",
        "severity": "info",
        "name": "p0-r1",
        "action": "restart",
        "stage": "work",
    }

    # The work is done: its notice ends at once, and the page about p0-r1,
    # still firing, is sent again.
    asyncio.run(maintenance.conclude(alertmanager.url, "p0-r1", "restart", grace_s=0))
    states = _wait_states(alertmanager, {("IronbookReplicaDown", "p0-r1"): "active"})
    assert ("IronbookMaintenance", "p0-r1") not in states


def _stages(manager: LocalAlertmanager) -> dict[str, float]:
    """stage -> seconds left, of p0-r1's maintenance notices still firing."""
    return {
        str(a["labels"]["stage"]): _parse(str(a["endsAt"])) - time.time()
        for a in manager.alerts()
        if a["labels"]["alertname"] == "IronbookMaintenance"
    }


def _parse(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_the_grace_after_long_work_ends_on_time(alertmanager: LocalAlertmanager) -> None:
    """Alertmanager keeps the later end when one alert is posted twice, so a
    notice posted for ten minutes cannot be shortened to a grace by posting
    it again: the grace is a notice of its own, and the work's ends at once."""
    asyncio.run(maintenance.announce(alertmanager.url, "p0-r1", "restart", 600))
    post_alerts(alertmanager.url, [_page("p0-r1")])
    _wait_states(alertmanager, {("IronbookReplicaDown", "p0-r1"): "suppressed"})

    asyncio.run(maintenance.conclude(alertmanager.url, "p0-r1", "restart", grace_s=10))
    deadline = time.monotonic() + WAIT_S
    while set(stages := _stages(alertmanager)) != {"after"}:
        assert time.monotonic() < deadline, stages
        time.sleep(0.2)
    assert stages["after"] <= 10
    # Still quiet during the grace, paged again once it is over.
    assert _states(alertmanager)[("IronbookReplicaDown", "p0-r1")] == "suppressed"
    states = _wait_states(alertmanager, {("IronbookReplicaDown", "p0-r1"): "active"})
    assert ("IronbookMaintenance", "p0-r1") not in states


def test_the_work_goes_on_when_alertmanager_cannot_be_reached() -> None:
    asyncio.run(maintenance.announce("http://127.0.0.1:9", "n1", "drain", 60))
