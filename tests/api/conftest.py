"""API fixtures: a real local cluster (3 NATS nodes, 3 replicas) with its
gateway workers, plus two single gateway workers with tight limits for the
rate-limit and overload tests. One cluster per test session (per xdist
worker), in a temp dir, on free loopback ports, always stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_support import Api, World, create_market, running_api


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("api-cluster")) as handle:
        yield handle


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


@pytest.fixture
def world(api: Api, http: httpx.Client) -> World:
    return World(api=api, http=http, market_id=create_market(api, http))
