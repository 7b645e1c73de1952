"""Integration fixtures: real engines started as child processes in temp dirs.

Every process is started by a launcher from `ironbook.adapters` and stopped by
its PID when the test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.services.local_cluster import LocalCluster

CLUSTER_START_TIMEOUT_MS = 60_000
LEADERS_TIMEOUT_MS = 90_000


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    """A fresh 3-node JetStream cluster on free loopback ports."""
    cluster = LocalNatsCluster(tmp_path / "nats", size=3)
    try:
        cluster.start(timeout_ms=CLUSTER_START_TIMEOUT_MS)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A whole secured ironbook cluster as `ironbook up` runs it (one
    partition, mutual TLS and identities), with a leader elected."""
    local = LocalCluster(tmp_path / "cluster")
    try:
        local.start()
        asyncio.run(local.wait_leaders(timeout_ms=LEADERS_TIMEOUT_MS))
        yield local
    finally:
        local.stop()
