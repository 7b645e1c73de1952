"""`ironbook watch` against real Prometheus and Alertmanager processes: a
replica metrics endpoint whose lag the test moves is scraped; a step in the
lag becomes an `IronbookWatchAnomaly` alert in Alertmanager with its
evidence, and the alert resolves when the lag is calm again."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server

from ironbook.adapters.nats.localproc import LOOPBACK, PortLease
from ironbook.adapters.prometheus import (
    LocalAlertmanager,
    LocalPrometheus,
    MonitoringBinaryMissing,
    binary,
)
from ironbook.services import watch
from ironbook.services.replica_metrics import ReplicaMetrics
from ironbook.settings import WatchSettings

CALM_ROUNDS = 25
MAX_ROUNDS = 60


@pytest.fixture
def monitoring(
    tmp_path: Path,
) -> Iterator[tuple[ReplicaMetrics, LocalPrometheus, LocalAlertmanager]]:
    try:
        binary("prometheus")
        binary("prometheus-alertmanager", "alertmanager")
    except MonitoringBinaryMissing as err:
        if os.geteuid() == 0:
            pytest.fail(f"{err} although we run as root: run deploy/install-monitoring.sh")
        pytest.skip(str(err))
    metrics = ReplicaMetrics(0)
    ports = PortLease()
    (port,) = ports.take(1)
    server, thread = start_http_server(port, LOOPBACK, registry=metrics.registry)
    prometheus = LocalPrometheus(
        tmp_path / "prometheus", {"ironbook-replica": [f"{LOOPBACK}:{port}"]}
    )
    alertmanager = LocalAlertmanager(tmp_path / "alertmanager")
    try:
        prometheus.start()
        alertmanager.start()
        yield metrics, prometheus, alertmanager
    finally:
        prometheus.close()
        alertmanager.close()
        server.shutdown()
        thread.join(timeout=10)
        ports.release()


def _lag_alerts(alertmanager: LocalAlertmanager) -> list[dict[str, Any]]:
    return [
        alert
        for alert in alertmanager.alerts()
        if isinstance(alert["labels"], dict)
        and alert["labels"].get("series") == "replica_lag_entries"
    ]


def test_a_lag_step_reaches_alertmanager_with_its_evidence_and_resolves(
    monitoring: tuple[ReplicaMetrics, LocalPrometheus, LocalAlertmanager],
) -> None:
    metrics, prometheus, alertmanager = monitoring
    settings = WatchSettings(
        prometheus_url=prometheus.url,
        alertmanager_url=alertmanager.url,
        window_samples=30,
        min_samples=10,
        gap_samples=5,
        confirm_samples=2,
        calm_samples=4,
    )
    watcher = watch.build(settings)
    lag = metrics.lag.labels("0")
    rng = random.Random(1)

    async def rounds() -> tuple[list[dict[str, Any]], int | None]:
        fired: list[dict[str, Any]] = []
        resolved_at = None
        for i in range(MAX_ROUNDS):
            stepped = i >= CALM_ROUNDS and not fired
            lag.set(5_000 if stepped else 10 + rng.randint(-2, 2))
            await asyncio.sleep(1.0)
            await watcher.round(time.time())
            alerts = await asyncio.to_thread(_lag_alerts, alertmanager)
            if alerts and not fired:
                assert i >= CALM_ROUNDS, "an alert during the calm stretch"
                fired = alerts
            elif fired and not alerts:
                resolved_at = i
                break
        return fired, resolved_at

    fired, resolved_at = asyncio.run(rounds())
    assert fired, "the step in the lag never reached Alertmanager"
    alert = fired[0]
    assert alert["labels"]["alertname"] == "IronbookWatchAnomaly"
    assert alert["labels"]["job"] == "ironbook-replica"
    assert alert["labels"]["partition"] == "0"
    assert alert["labels"]["detector"] in ("windowed_gaussian", "half_space_trees")
    assert float(alert["annotations"]["value"]) == 5_000
    assert float(alert["annotations"]["score"]) > 0.9
    assert resolved_at is not None, "the alert did not resolve once the lag was calm"
