"""A local cluster with its monitoring stack, for the monitoring and console
tests: started once per module, every Prometheus target up before a test
runs, stopped by PID afterwards. The supervisor's `/metrics` is served from a
thread of the test process, as `ironbook up` serves it from its own."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.prometheus import wait_targets_up
from ironbook.services.local_cluster import GatewayOptions, LocalCluster
from ironbook.settings import FeedSettings, MonitoringSettings

TARGETS_UP_TIMEOUT_S = 150
EXPECTED_JOBS = {
    "ironbook-replica",
    "ironbook-gateway",
    "ironbook-history",
    "ironbook-feed",
    "ironbook-settlement",
    "ironbook-supervisor",
    "ironbook-nats-exporter",
    "ironbook-alert-receiver",
    "ironbook-audit-verifier",
    "node",
    "prometheus",
    "alertmanager",
}


@dataclass
class MonitoredCluster:
    cluster: LocalCluster
    targets: list[dict[str, Any]]
    """Prometheus's active targets once all were up."""


def post_notification(ops_url: str, status: str, alertname: str) -> None:
    """What Alertmanager's webhook receiver posts, for one alert."""
    alert = {
        "status": status,
        "labels": {"alertname": alertname, "severity": "page", "partition": "0"},
        "annotations": {"summary": f"{alertname} for the test", "description": "test"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:01:00Z",
        "generatorURL": "http://127.0.0.1/graph",
        "fingerprint": f"test-{alertname}",
    }
    body = {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "ironbook",
        "groupLabels": {},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [alert],
    }
    request = urllib.request.Request(
        ops_url + "/alerts/webhook",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _serve_supervisor_metrics(cluster: LocalCluster, stop: threading.Event) -> None:
    async def serve() -> None:
        server = await cluster.serve_supervisor_metrics()
        assert server is not None
        async with server:
            await asyncio.to_thread(stop.wait)

    asyncio.run(serve())


def monitored_cluster_in(root: Path) -> Iterator[MonitoredCluster]:
    ports = PortLease()
    (http_port,) = ports.take(1)
    cluster = LocalCluster(
        root / "cluster",
        gateway=GatewayOptions(port=http_port, workers=1),
        feed=FeedSettings(rate=20),
        monitoring=MonitoringSettings(enabled=True),
    )
    stop = threading.Event()
    server = threading.Thread(target=_serve_supervisor_metrics, args=(cluster, stop), daemon=True)
    try:
        cluster.start()
        server.start()
        assert cluster.monitoring is not None
        asyncio.run(cluster.wait_leaders(timeout_ms=120_000))
        targets = wait_targets_up(
            cluster.monitoring.prometheus_url, EXPECTED_JOBS, timeout_s=TARGETS_UP_TIMEOUT_S
        )
        yield MonitoredCluster(cluster, targets)
    finally:
        stop.set()
        cluster.stop()
        server.join(timeout=5)
        ports.release()
