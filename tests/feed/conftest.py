"""Fixtures shared by the feed tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook.adapters.nats.server import LocalNatsCluster


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-node NATS cluster for the tests of one module."""
    cluster = LocalNatsCluster(Path(tmp_path_factory.mktemp("nats")), size=3)
    try:
        cluster.start(timeout_ms=60_000)
        yield cluster.url
    finally:
        cluster.close()
