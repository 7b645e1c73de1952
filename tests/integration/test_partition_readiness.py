"""Per-partition readiness on a real 2-partition cluster: partition 1's
ledger leader and the NATS server leading its log are killed together; the
bets of partition 0 keep flowing through the gateway, `/readyz` stays 200
(naming partition 1 unavailable), and partition 1's commands get a clear
503 until it has a leader again."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from ironbook import core
from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import close_nats
from ironbook.chaos.http_clients import GENEROUS_LIMITS
from ironbook.services.gateway.auth import SigningKey, local_signing_key, mint_token
from ironbook.services.local_cluster import GatewayOptions, LocalCluster
from ironbook.services.maintenance import move_leaderships_off, move_stream_leader

START_TIMEOUT_S = 120
OUTAGE_S = 12.0
"""How long the bets of partition 0 are watched after the kill: longer than
a NATS Raft election (4-9 s)."""


def _account_in(partition: int, partitions: int) -> str:
    while True:
        account_id = f"acc-{uuid.uuid4().hex[:10]}"
        if core.partition_of(account_id, partitions) == partition:
            return account_id


class _Http:
    def __init__(self, url: str, secret: SigningKey) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.secret = secret

    def headers(self, role: str, account_id: str | None = None) -> dict[str, str]:
        token = mint_token(self.secret, role=role, account_id=account_id)
        return {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, object], role: str, **kw: str) -> httpx.Response:
        headers = self.headers(role, kw.get("account_id"))
        if "key" in kw:
            headers["Idempotency-Key"] = kw["key"]
        return self.client.post(path, json=body, headers=headers)

    def ready(self) -> tuple[int, dict[str, object]]:
        try:
            response = self.client.get("/readyz", timeout=5)
        except httpx.HTTPError:
            return 0, {}
        return response.status_code, response.json()


def _funded(http: _Http, partition: int) -> str:
    account_id = _account_in(partition, 2)
    assert http.post("/v1/accounts", {"account_id": account_id}, "admin").status_code == 201
    deposit = http.post(
        f"/v1/accounts/{account_id}/deposits",
        {"amount_minor": 1_000_000, "reason": "test top-up"},
        "cashier",
    )
    assert deposit.status_code == 201, deposit.text
    return account_id


def _bet(http: _Http, account_id: str, market_id: str, key: str) -> httpx.Response:
    body = {
        "account_id": account_id,
        "stake_minor": 100,
        "legs": [{"market_id": market_id, "selection_id": "home", "odds": "2.50"}],
    }
    return http.post("/v1/bets", body, "bettor", account_id=account_id, key=key)


def test_one_partition_down_leaves_the_other_and_the_gateway_serving(tmp_path: Path) -> None:
    ports = PortLease()
    port = ports.take(1)[0]
    cluster = LocalCluster(
        tmp_path / "cluster",
        partitions=2,
        gateway=GatewayOptions(port=port, workers=2, env=GENEROUS_LIMITS),
    )
    try:
        cluster.start(timeout_ms=START_TIMEOUT_S * 1000)
        asyncio.run(cluster.wait_leaders(timeout_ms=START_TIMEOUT_S * 1000))
        _outage(cluster, f"http://127.0.0.1:{port}")
    finally:
        cluster.stop()
        ports.release()


def _outage(cluster: LocalCluster, url: str) -> None:
    http = _Http(url, local_signing_key(cluster.data_dir))
    deadline = time.monotonic() + START_TIMEOUT_S
    while http.ready()[0] != 200:
        assert time.monotonic() < deadline, "the gateway never became ready"
        time.sleep(0.2)
    market_id = f"mkt-{uuid.uuid4().hex[:8]}"
    market = http.post(
        "/v1/markets",
        {
            "market_id": market_id,
            "event": "ev-1",
            "name": "Match odds",
            "reason": "new market",
            "selections": [{"selection_id": "home", "name": "Home", "odds": "2.50"}],
        },
        "trader",
    )
    assert market.status_code == 201, market.text
    steady, troubled = _funded(http, 0), _funded(http, 1)
    assert _bet(http, troubled, market_id, "warm-up").status_code == 201

    # The victim server leads partition 1's log and nothing else the other
    # partition's writes need (the shared lease and Idempotency-Key buckets).
    victim = asyncio.run(_isolate_log_leader(cluster, stream_name(1)))
    leaders = asyncio.run(cluster.wait_leaders(timeout_ms=60_000))
    ledger_victim = leaders[1].node_id
    cluster.nats.kill_node(victim)
    cluster.replicas[ledger_victim].kill()
    killed_at = time.monotonic()

    steady_codes: list[int] = []
    ready_codes: list[int] = []
    troubled_problems: list[httpx.Response] = []
    index = 0
    while time.monotonic() - killed_at < OUTAGE_S:
        index += 1
        steady_codes.append(_bet(http, steady, market_id, f"steady-{index}").status_code)
        status, body = http.ready()
        ready_codes.append(status)
        if body.get("unavailable_partitions") == [1]:
            # Refused at once, not after the whole deadline (or placed if
            # partition 1 just came back).
            attempt = _bet(http, troubled, market_id, f"troubled-{index}")
            assert attempt.status_code in (201, 503), attempt.text
            if attempt.status_code == 503:
                troubled_problems.append(attempt)
    print(
        f"killed {victim} and {ledger_victim}: {len(steady_codes)} bets on partition 0 in "
        f"{OUTAGE_S:g} s, partition 1 refused {len(troubled_problems)} times"
    )
    assert steady_codes and set(steady_codes) == {201}, steady_codes
    assert set(ready_codes) == {200}, ready_codes
    assert troubled_problems, "partition 1 was never reported unavailable"
    problem = troubled_problems[0]
    assert problem.json()["code"] == "partition_unavailable"
    assert "partition 1 " in problem.json()["detail"]
    assert problem.headers["Retry-After"] == "1"

    cluster.nats.start_node(victim, wait=False)
    cluster.replicas[ledger_victim].start()
    deadline = time.monotonic() + 120
    tries = 0
    while _bet(http, troubled, market_id, f"after-{tries}").status_code != 201:
        assert time.monotonic() < deadline, "partition 1 never came back"
        tries += 1
        time.sleep(0.5)
    assert http.ready()[1].get("unavailable_partitions") == []


async def _isolate_log_leader(cluster: LocalCluster, stream: str) -> str:
    victim = await asyncio.to_thread(cluster.nats.wait_stream_leader, stream)
    await move_leaderships_off(cluster, victim, keep=[stream])
    nc = await cluster.ops.connect("test-isolate")
    try:
        if await asyncio.to_thread(cluster.nats.stream_leader, stream) != victim:
            await move_stream_leader(nc, stream, victim)
    finally:
        await close_nats(nc)
    return victim
