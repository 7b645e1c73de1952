"""A DR site with real nats-servers: site B (3 nodes, domain `b`) mirrors site
A's streams over leafnode links through the WAN relay; `ironbook dr status
--json` shows the mirrors caught up; site A dies, site B is promoted and takes
deposits, and site A restarted with its data refuses every write to the
ledger and the checkpoints (its servers fenced by config, its streams sealed).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from dr_support import audit_epochs_on, deposit

from ironbook.adapters.audit.events import decode_event
from ironbook.adapters.nats.log import stream_name
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.services import dr
from ironbook.services.dr_promotion import promote_site_b
from ironbook.services.local_cluster import LocalCluster
from ironbook.settings import DrSettings

WAIT_MS = 90_000
RTT_MS = 30
CLI = "import sys; from ironbook.cli import main; sys.exit(main())"


def _dr_status(cluster: LocalCluster) -> dict[str, Any]:
    """`ironbook dr status --json`, as an operator runs it (its own process)."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, "dr", "status", "--json", "--data-dir", str(cluster.data_dir)],
        env=cluster.child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def _wait_caught_up(cluster: LocalCluster) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        view = _dr_status(cluster)
        rows = {row["stream"]: row for row in view["streams"]}
        if view["link_rtt_ms"] and all(
            row["mirror"] and row["mirror_last_seq"] == row["origin_last_seq"]
            for row in rows.values()
        ):
            return view
        assert time.monotonic() < deadline, f"mirrors never caught up: {rows}"
        time.sleep(0.5)


async def _api_refused(cluster: LocalCluster, subject: str) -> None:
    nc = await cluster.site_endpoint(dr.SITE_A, dr.LINK_IDENTITY).connect("test-link")
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(subject, b"", timeout=1)
    finally:
        await nc.close()


async def _takeover_recorded(cluster: LocalCluster) -> str:
    """The `dr_takeover` event in site B's significant-event log: its epoch."""
    nc = await cluster.site_endpoint(dr.SITE_B).connect("test-takeover")
    try:
        msg = await nc.jetstream().get_last_msg("AUDIT_EVENTS", "audit.event.dr_takeover")
    finally:
        await nc.close()
    event = decode_event(msg.data or b"")
    assert event.kind == "dr_takeover" and event.actor == "operator:test"
    return event.detail.split(";")[0]


async def _no_verify_failure_on_site_b(cluster: LocalCluster) -> None:
    """The audit verifier running against site B recorded no failure."""
    nc = await cluster.site_endpoint(dr.SITE_B).connect("test-verifier")
    try:
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().get_last_msg("AUDIT_EVENTS", "audit.event.audit_verify_failure")
    finally:
        await nc.close()


async def _publish_refused(cluster: LocalCluster, identity: str, subject: str) -> None:
    nc = await cluster.site_endpoint(dr.SITE_A, identity).connect("test-fenced")
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream().publish(subject, b"x", timeout=2)
    finally:
        await nc.close()


def test_site_b_mirrors_then_takes_over_and_site_a_back_refuses_writes(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", dr=DrSettings(enabled=True, wan_rtt_ms=RTT_MS))
    assert cluster.site_b is not None
    try:
        cluster.start(timeout_ms=WAIT_MS)
        asyncio.run(cluster.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(cluster, "a", 5))

        view = _wait_caught_up(cluster)
        assert view["primary"]["site"] == "a" and view["primary"]["epoch"] == 1
        ledger = next(row for row in view["streams"] if row["stream"] == stream_name(0))
        assert ledger["origin_last_seq"] > 0 and ledger["lag_entries"] == 0
        assert ledger["active_s"] is not None
        # The links' RTT, measured by the servers through the relay.
        assert min(view["link_rtt_ms"]) >= RTT_MS
        before = ledger["origin_last_seq"]
        # The link's identity can mirror, nothing more.
        asyncio.run(_publish_refused(cluster, dr.LINK_IDENTITY, "ledger.0"))
        asyncio.run(_api_refused(cluster, "$JS.a.API.STREAM.DELETE.LEDGER_0"))
        asyncio.run(_api_refused(cluster, "$JS.API.STREAM.DELETE.LEDGER_0"))

        for name in cluster.nats.nodes:
            cluster.nats.kill_node(name)
        started = time.monotonic()

        def said(line: str) -> None:
            print(f"{time.monotonic() - started:6.2f} s  {line}")

        done = asyncio.run(promote_site_b(cluster, "operator:test", said))
        promoted_s = time.monotonic() - started
        assert any("epoch 2" in step for step in done), done
        assert dr.read_primary(cluster.data_dir).epoch == 2
        first_deposit_s = promoted_s + asyncio.run(deposit(cluster, "b", 3))
        print(f"promotion {promoted_s:.2f} s; first deposit on site b {first_deposit_s:.2f} s")
        assert asyncio.run(_takeover_recorded(cluster)) == "epoch 2"
        # A new audit epoch on each log, and site B's chains verify across it.
        epochs = asyncio.run(audit_epochs_on(cluster, dr.SITE_B, WAIT_MS / 1000))
        for log in (0, EVENTS_LOG):
            assert any(f"log {log}: epoch 2 began on site b" in line for line in epochs), epochs
        asyncio.run(_no_verify_failure_on_site_b(cluster))

        # Site A back with its data, its streams not sealed (it was gone at
        # the promotion): the fence in its servers' config alone holds.
        for name in cluster.nats.nodes:
            cluster.nats.start_node(name, wait=False)
        cluster.nats.wait_healthy(timeout_ms=WAIT_MS)
        for identity in ("replica", "ops"):
            asyncio.run(_publish_refused(cluster, identity, "ledger.0"))
        asyncio.run(_publish_refused(cluster, "replica", "audit.checkpoint.0"))
    finally:
        cluster.stop()

    # The whole pair restarted from its data: site A comes back fenced and
    # sealed, every service runs against site B.
    again = LocalCluster(tmp_path / "cluster", dr=DrSettings(enabled=True, wan_rtt_ms=RTT_MS))
    try:
        again.start(timeout_ms=WAIT_MS)
        asyncio.run(again.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(again, "again", 1))
        asyncio.run(_publish_refused(again, "ops", "ledger.0"))
        after = _dr_status(again)
        rows = {row["stream"]: row for row in after["streams"]}
        assert after["primary"]["site"] == "b"
        assert rows[stream_name(0)]["mirror"] is False
        assert rows[stream_name(0)]["origin_sealed"] is True
        assert rows[stream_name(0)]["origin_last_seq"] == before
        assert rows[stream_name(0)]["mirror_last_seq"] > before
    finally:
        again.stop()
