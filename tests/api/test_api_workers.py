"""Gateway workers share one port and are kept alive by the supervisor."""

from __future__ import annotations

import time

import httpx
from api_support import Api


def test_a_killed_worker_is_survived_and_restarted(api: Api) -> None:
    cluster = api.cluster
    victim = cluster.gateways["gw-1"]
    old_pid = victim.pid
    victim.kill()
    headers = api.auth("auditor")
    # The other worker keeps the port: every new connection is served.
    for _ in range(20):
        with httpx.Client(base_url=api.url, timeout=10) as client:
            assert client.get("/v1/markets", headers=headers).status_code == 200
    deadline = time.monotonic() + 30
    while not victim.is_running():
        assert time.monotonic() < deadline, "the supervisor did not restart the worker"
        cluster.supervisor.check()
        time.sleep(0.05)
    assert victim.pid != old_pid
    while True:
        try:
            if httpx.get(f"{api.url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert cluster.supervisor.children["gw-1"].restarts >= 1


def test_readyz_goes_false_without_a_ledger_leader_and_recovers(api: Api) -> None:
    replicas = list(api.cluster.replicas.values())

    def ready() -> int:
        try:
            return httpx.get(f"{api.url}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    for replica in replicas:
        replica.pause()
    try:
        deadline = time.monotonic() + 20
        while ready() != 503:
            assert time.monotonic() < deadline, "/readyz stayed ready with every replica frozen"
            time.sleep(0.2)
        assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
    finally:
        for replica in replicas:
            replica.resume()
    deadline = time.monotonic() + 60
    while ready() != 200:
        assert time.monotonic() < deadline, "/readyz did not recover"
        time.sleep(0.2)
