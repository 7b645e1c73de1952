"""The replica processes of a real local cluster serve `/metrics`: each
heartbeat names its URL, the leader reports the leader role, its term and no
lag, and after a refused deposit and an opened account the commands, append
latency and applied sequence show them; a follower reports the follower role
and catches up, and after 1,600 log entries writes a snapshot (through its
forked child) with no failure."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from ironbook import core
from ironbook.client import ClientConfig, connect_ledger
from ironbook.core import acting
from ironbook.services.local_cluster import LocalCluster, collect_heartbeats
from ironbook.services.nats_exporter import http_get

WAIT_S = 30.0


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(url, 10.0)
    assert status == 200, url
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _get(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted({"partition": "0", **labels}.items()))), 0.0)


async def _check(cluster: LocalCluster) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        beats = await collect_heartbeats(cluster.ops, 1_500)
        replicas = [beat for beat in beats.values() if beat.partition == 0]
        roles = sorted(beat.role for beat in replicas)
        if roles == ["follower", "follower", "leader"]:
            break
        assert asyncio.get_running_loop().time() < deadline, roles
    assert all(beat.metrics_url.startswith("http://127.0.0.1:") for beat in replicas)
    leader = next(beat for beat in replicas if beat.role == "leader")
    follower = next(beat for beat in replicas if beat.role == "follower")

    found = await _scrape(leader.metrics_url)
    assert _get(found, "ironbook_replica_role", role="leader") == 1
    assert _get(found, "ironbook_replica_role", role="follower") == 0
    assert _get(found, "ironbook_replica_term") == leader.term
    assert _get(found, "ironbook_replica_quarantined_entries") == 0
    applied_before = _get(found, "ironbook_replica_applied_sequence")

    client = await connect_ledger(
        cluster.ops, config=ClientConfig(deadline_ms=30_000), issuer=acting("test")
    )
    try:
        refused = await client.submit(
            core.Deposit(
                request_id="metrics-refused",
                account_id="alice",
                amount_minor=500,
                reason="test top-up",
            )
        )
        opened = await client.submit(
            core.OpenAccount(request_id="metrics-open", account_id="alice")
        )
    finally:
        await client.close()
    assert isinstance(refused, core.Rejected)
    assert isinstance(opened, core.Accepted)

    found = await _scrape(leader.metrics_url)
    commands = "ironbook_replica_commands_total"
    assert _get(found, commands, kind="deposit", outcome="rejected") == 1
    assert _get(found, commands, kind="open_account", outcome="accepted") == 1
    assert _get(found, "ironbook_replica_append_seconds_count") >= 1
    assert _get(found, "ironbook_replica_applied_sequence") > applied_before
    assert _get(found, "ironbook_replica_lag_entries") == 0

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        found = await _scrape(follower.metrics_url)
        assert _get(found, "ironbook_replica_role", role="follower") == 1
        caught_up = _get(found, "ironbook_replica_lag_entries") == 0 and _get(
            found, "ironbook_replica_applied_sequence"
        ) == _get(found, "ironbook_replica_stream_last_sequence")
        if caught_up and _get(found, "ironbook_replica_applied_sequence") > applied_before:
            break
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.2)


def test_replicas_serve_their_metrics(cluster: LocalCluster) -> None:
    asyncio.run(_check(cluster))


SNAPSHOT_ENTRIES = 1_600
"""Above `snapshot_every_entries` (1,000) raised by the largest stagger (0.5)."""


async def _snapshot_taken(cluster: LocalCluster) -> None:
    client = await connect_ledger(
        cluster.ops, config=ClientConfig(deadline_ms=30_000), issuer=acting("test")
    )
    try:
        for n in range(SNAPSHOT_ENTRIES):  # one at a time: one log entry each
            outcome = await client.submit(
                core.OpenAccount(request_id=f"snapshot-open-{n}", account_id=f"snap-{n}")
            )
            assert isinstance(outcome, core.Accepted), outcome
    finally:
        await client.close()
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        beats = await collect_heartbeats(cluster.ops, 1_500)
        followers = [b for b in beats.values() if b.partition == 0 and b.role == "follower"]
        scrapes = [await _scrape(beat.metrics_url) for beat in followers]
        taken = [s for s in scrapes if _get(s, "ironbook_replica_snapshot_seconds_count") >= 1]
        if taken:
            break
        assert asyncio.get_running_loop().time() < deadline, "no follower wrote a snapshot"
        await asyncio.sleep(0.5)
    for found in taken:
        assert _get(found, "ironbook_replica_snapshot_failures_total") == 0
        assert _get(found, "ironbook_replica_snapshot_bytes") > 0


def test_a_follower_writes_its_snapshot_from_a_forked_child(cluster: LocalCluster) -> None:
    asyncio.run(_snapshot_taken(cluster))
