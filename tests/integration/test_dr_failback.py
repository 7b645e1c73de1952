"""Failback with real nats-servers: site A takes deposits, one of them while
the link is cut (acknowledged on A only), A's servers are killed (kill -9),
site B is promoted and takes deposits, A's servers come back fenced, and
`ironbook dr failback --json` (through the control socket) makes A primary
again: A holds every entry B's sealed log holds, takes writes, B refuses
them and mirrors A again, A's epoch-1 streams (the deposit B never received
among them) are kept in hashed exports, and B can be promoted again. And
(slow) the pair restarted from its data after a failback serves from A
with B mirroring it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from dr_support import audit_epochs_on, deposit

from ironbook.adapters.audit.events import decode_event
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import close_nats
from ironbook.adapters.nats.stream_export import HASH_FILE, verify_export
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.services import dr
from ironbook.services.control import control_path, serve_control
from ironbook.services.dr_failback import failback, reseed
from ironbook.services.dr_promotion import promote_site_b
from ironbook.services.local_cluster import LocalCluster
from ironbook.settings import DrSettings

WAIT_MS = 90_000
RTT_MS = 10
CLI = "import sys; from ironbook.cli import main; sys.exit(main())"
LEDGER = stream_name(0)


def _dr(cluster: LocalCluster, command: str) -> dict[str, Any]:
    """`ironbook dr <command> --json`, as an operator runs it (its own process)."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, "dr", command, "--json", "--data-dir", str(cluster.data_dir)],
        env=cluster.child_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def _dr_status(cluster: LocalCluster) -> dict[str, Any]:
    return _dr(cluster, "status")


@contextlib.contextmanager
def _control_socket(cluster: LocalCluster) -> Iterator[None]:
    """The cluster's control socket served as `ironbook up` serves it (in a
    thread with its own event loop, for the duration)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    served = threading.Thread(
        target=loop.run_until_complete,
        args=(serve_control(cluster, stop, lambda *_args, **_kwargs: None),),
    )
    served.start()
    try:
        deadline = time.monotonic() + 10
        while not control_path(cluster.data_dir).exists():
            assert time.monotonic() < deadline and served.is_alive(), "no control socket"
            time.sleep(0.05)
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        served.join(timeout=30)
        loop.close()


async def _last_seq(cluster: LocalCluster, site: dr.Site) -> int:
    states = await dr.stream_states(cluster.site_endpoint(site), [LEDGER])
    state = states[LEDGER]
    assert state is not None
    return state.last_seq


async def _b_caught_up(cluster: LocalCluster) -> None:
    missing = await dr.wait_caught_up(
        cluster.site_endpoint(dr.SITE_A), cluster.site_endpoint(dr.SITE_B), [LEDGER], 60
    )
    assert not missing, missing


async def _publish_refused(cluster: LocalCluster, site: dr.Site, identity: str) -> None:
    nc = await cluster.site_endpoint(site, identity).connect("test-fenced")
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream().publish("ledger.0", b"x", timeout=1)
    finally:
        await close_nats(nc)


async def _request_refused(
    cluster: LocalCluster, site: dr.Site, identity: str, subject: str
) -> None:
    nc = await cluster.site_endpoint(site, identity).connect("test-link")
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(subject, b"", timeout=1)
    finally:
        await close_nats(nc)


async def _link_cannot_write_either_way(cluster: LocalCluster) -> None:
    """Neither the link's identity on either site, nor `ops` of one site
    through the link, may publish a ledger command or delete a stream."""
    for site in (dr.SITE_A, dr.SITE_B):
        await _publish_refused(cluster, site, dr.LINK_IDENTITY)
        for domain in ("$JS.API", "$JS.a.API", "$JS.b.API"):
            await _request_refused(
                cluster, site, dr.LINK_IDENTITY, f"{domain}.STREAM.DELETE.{LEDGER}"
            )
    await _request_refused(cluster, dr.SITE_A, "ops", f"$JS.b.API.STREAM.DELETE.{LEDGER}")
    await _request_refused(cluster, dr.SITE_B, "ops", f"$JS.a.API.STREAM.DELETE.{LEDGER}")


async def _failback_recorded(cluster: LocalCluster) -> str:
    nc = await cluster.site_endpoint(dr.SITE_A).connect("test-failback")
    try:
        msg = await nc.jetstream().get_last_msg("AUDIT_EVENTS", "audit.event.dr_failback")
    finally:
        await close_nats(nc)
    event = decode_event(msg.data or b"")
    assert event.kind == "dr_failback" and event.actor.startswith("operator:")
    return event.detail.split(";")[0]


async def _a_holds(cluster: LocalCluster, lines: list[dict[str, Any]]) -> None:
    """Site A's ledger holds each exported entry of B's, at its sequence."""
    nc = await cluster.site_endpoint(dr.SITE_A).connect("test-compare")
    try:
        js = nc.jetstream()
        for line in lines:
            msg = await js.get_msg(LEDGER, seq=line["seq"])
            assert msg.data == base64.b64decode(line["data"]), line["seq"]
    finally:
        await close_nats(nc)


def _export(directory: Path, stream: str) -> list[dict[str, Any]]:
    assert all(verify_export(directory).values()), directory
    assert (directory / HASH_FILE).read_text().count(f"{stream}.jsonl") == 1
    return [json.loads(line) for line in (directory / f"{stream}.jsonl").read_text().splitlines()]


def test_failback_returns_to_site_a_with_everything_b_took(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", dr=DrSettings(enabled=True, wan_rtt_ms=RTT_MS))
    assert cluster.site_b is not None and cluster.relay is not None
    started = time.monotonic()

    def said(line: str) -> None:
        print(f"{time.monotonic() - started:6.2f} s  {line}")

    try:
        cluster.start(timeout_ms=WAIT_MS)
        asyncio.run(cluster.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(cluster, "a", 3))
        asyncio.run(_b_caught_up(cluster))
        # The link cut: a deposit acknowledged on A that B never receives.
        cluster.relay.kill()
        asyncio.run(deposit(cluster, "lost", 1))
        a_epoch1_last = asyncio.run(_last_seq(cluster, dr.SITE_A))
        for name in cluster.nats.nodes:
            cluster.nats.kill_node(name)
        said("site a killed")

        asyncio.run(promote_site_b(cluster, "operator:test", said))
        asyncio.run(deposit(cluster, "b", 3))
        said("deposits on site b")

        cluster.relay.start()
        for name in cluster.nats.nodes:
            cluster.nats.start_node(name, wait=False)
        cluster.nats.wait_healthy(timeout_ms=WAIT_MS)
        asyncio.run(_publish_refused(cluster, dr.SITE_A, "ops"))  # back fenced
        said("site a back, fenced")

        # Re-seeding alone: A mirrors B, as `dr status` shows.
        asyncio.run(reseed(cluster, dr.SITE_A, said))
        rows = {row["stream"]: row for row in _dr_status(cluster)["streams"]}
        assert rows[LEDGER]["mirror_site"] == "a" and rows[LEDGER]["lag_entries"] is not None

        with _control_socket(cluster):
            report = _dr(cluster, "failback")
        said(f"failback {report['failback_s']:.2f} s {report['phases_s']}")
        assert report["epoch"] == 3 and dr.read_primary(cluster.data_dir).site == "a"
        assert not report["missing_at_switch"] and not report["b_mirror_lag"]
        assert asyncio.run(_failback_recorded(cluster)) == "epoch 3"

        # Every entry of B's (its epoch-2 ledger, exported when B became
        # A's mirror again) is on A, at the same sequence.
        b_lines = _export(dr.export_dir(cluster.data_dir, dr.SITE_B, 2), LEDGER)
        assert report["copied_entries"][LEDGER] == len(b_lines) > 0
        asyncio.run(_a_holds(cluster, b_lines))
        assert any(b"b-2" in base64.b64decode(line["data"]) for line in b_lines)
        # A's epoch-1 ledger, with the deposit B never received.
        a_lines = _export(dr.export_dir(cluster.data_dir, dr.SITE_A, 1), LEDGER)
        assert a_lines[-1]["seq"] == a_epoch1_last
        assert any(b"lost-0" in base64.b64decode(line["data"]) for line in a_lines)
        assert not any(b"lost-0" in base64.b64decode(line["data"]) for line in b_lines)

        asyncio.run(cluster.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(cluster, "back", 2))
        said("deposits on site a")
        # Site A's chains verify across both epochs: B's and A's again.
        epochs = asyncio.run(audit_epochs_on(cluster, dr.SITE_A, WAIT_MS / 1000))
        for log in (0, EVENTS_LOG):
            assert any(f"log {log}: epoch 3 began on site a" in line for line in epochs), epochs
        said("site a's audit chains verify across epochs 2 and 3")
        for identity in ("replica", "ops"):
            asyncio.run(_publish_refused(cluster, dr.SITE_B, identity))
        asyncio.run(_link_cannot_write_either_way(cluster))

        asyncio.run(_b_caught_up(cluster))
        view = _dr_status(cluster)
        rows = {row["stream"]: row for row in view["streams"]}
        assert view["primary"] == {**view["primary"], "site": "a", "epoch": 3}
        assert rows[LEDGER]["mirror_site"] == "b" and rows[LEDGER]["mirror"] is True
        assert rows[LEDGER]["lag_entries"] == 0
        assert rows[LEDGER]["mirror_last_seq"] == rows[LEDGER]["origin_last_seq"]
        said("site b mirrors site a")

        # And over again: site b promoted in a later epoch, site a fenced.
        asyncio.run(promote_site_b(cluster, "operator:test", said))
        assert dr.read_primary(cluster.data_dir).epoch == 4
        asyncio.run(deposit(cluster, "again", 1))
        asyncio.run(_publish_refused(cluster, dr.SITE_A, "ops"))
        said("site b primary again, epoch 4")
    finally:
        cluster.stop()


@pytest.mark.slow
def test_the_pair_restarted_after_a_failback_serves_from_a_and_b_mirrors_it(
    tmp_path: Path,
) -> None:
    """Promotion and failback with both sites alive, then `up` restarted
    from the data directory: site A serves, site B's mirrors are kept (a
    mirror is never sealed), and B can be promoted again."""
    settings = DrSettings(enabled=True, wan_rtt_ms=RTT_MS)
    cluster = LocalCluster(tmp_path / "cluster", dr=settings)
    started = time.monotonic()

    def said(line: str) -> None:
        print(f"{time.monotonic() - started:6.2f} s  {line}")

    try:
        cluster.start(timeout_ms=WAIT_MS)
        asyncio.run(cluster.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(cluster, "a", 1))
        asyncio.run(_b_caught_up(cluster))
        asyncio.run(promote_site_b(cluster, "operator:test", said))
        asyncio.run(deposit(cluster, "b", 1))
        report = asyncio.run(failback(cluster, "operator:test", said))
        assert report.epoch == 3 and not report.b_mirror_lag
    finally:
        cluster.stop()

    again = LocalCluster(tmp_path / "cluster", dr=settings)
    try:
        again.start(timeout_ms=WAIT_MS)
        assert again.primary.site == "a" and again.primary.epoch == 3
        asyncio.run(again.wait_leaders(timeout_ms=WAIT_MS))
        asyncio.run(deposit(again, "restarted", 1))
        asyncio.run(_b_caught_up(again))
        said("restarted: site a serves, site b mirrors it")
        asyncio.run(promote_site_b(again, "operator:test", said))
        assert dr.read_primary(again.data_dir).epoch == 4
        asyncio.run(deposit(again, "again", 1))
        asyncio.run(_publish_refused(again, dr.SITE_A, "ops"))
        said("site b primary again, epoch 4")
    finally:
        again.stop()
