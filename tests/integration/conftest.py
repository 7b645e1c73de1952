"""Integration fixtures: real engines started as child processes in temp dirs.

Every process is started by a launcher from `ironbook.adapters` and stopped by
its PID when the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook.adapters.nats.server import LocalNatsCluster

CLUSTER_START_TIMEOUT_MS = 60_000


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    """A fresh 3-node JetStream cluster on free loopback ports."""
    cluster = LocalNatsCluster(tmp_path / "nats", size=3)
    try:
        cluster.start(timeout_ms=CLUSTER_START_TIMEOUT_MS)
        yield cluster
    finally:
        cluster.close()
