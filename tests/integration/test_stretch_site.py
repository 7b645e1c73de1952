"""Stretch mode with real nats-servers: one cluster over sites a, b and c,
every route through the WAN relay. While the stretch drill's workload runs and
before its cut, `ironbook dr status --json` and `ironbook status --json` (run
as an operator runs them) show every stream one replica per site, each node's
site from its own tags, and routes that only reach their peers through the
relay (no route to another node's own route port; every route's round trip
the WAN RTT or more, give or take the relay's timer slack). Then the drill
kills the ledger leader's whole site with SIGKILL: every acknowledged write
is in the log, writes continue on the two sites left after a failover, and
the history checker passes. Started again from its data without a DR flag,
the cluster comes back in stretch mode with the same sites, all three up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from ironbook.adapters.nats.server import CLUSTER_FILE, ClusterLayout
from ironbook.chaos.stretch_drill import StretchDrillOptions, run_stretch_drill
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.stretch import STRETCH_FILE, StretchLayout, stretch_view

RTT_MS = 30
RELAYED_MS = 0.9 * RTT_MS
"""What a relayed route measures at least: the WAN RTT, less the relay's
timer slack (a direct loopback route measures well under a millisecond)."""
CLI = "import sys; from ironbook.cli import main; sys.exit(main())"
VIEW_TIMEOUT_S = 90.0


def _cli(*args: str) -> tuple[int, dict[str, Any] | None]:
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, None


async def _views(data_dir: Path, found: dict[str, dict[str, Any]]) -> None:
    """`dr status --json` and `status --json` as an operator runs them, until
    both show every stream one replica per site (a busy server may miss a
    monitoring answer: then they are asked again)."""
    deadline = time.monotonic() + VIEW_TIMEOUT_S
    while "status" not in found:
        if "dr" not in found:
            code, view = await asyncio.to_thread(
                _cli, "dr", "status", "--json", "--data-dir", str(data_dir)
            )
            if code == 0 and view is not None and all(n["route_rtt_ms"] for n in view["nodes"]):
                found["dr"] = view
        if "dr" in found:
            _, status = await asyncio.to_thread(
                _cli, "status", "--json", "--data-dir", str(data_dir)
            )
            dr = (status or {}).get("dr") or {}
            measured = dr.get("route_rtt_ms") or {}
            if dr.get("one_per_site") and measured and all(measured.values()):
                found["status"] = status
        assert time.monotonic() < deadline, f"never one per site: {found}"


def test_a_site_lost_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "stretch"
    found: dict[str, dict[str, Any]] = {}
    options = StretchDrillOptions(
        data_dir=data_dir,
        seconds=20,
        seed=3,
        wan_rtt_ms=RTT_MS,
        clients=8,
        cut_window=(0.3, 0.4),
        cut_site="leader",
        before_cut=lambda: _views(data_dir, found),
    )
    report = asyncio.run(run_stretch_drill(options, print))
    assert not report.errors, report.errors
    view, status = found["dr"], found["status"]
    print(json.dumps({k: v for k, v in msgspec.to_builtins(report).items() if k != "placement"}))

    layout = msgspec.json.decode(
        (data_dir / "nats" / CLUSTER_FILE).read_bytes(), type=ClusterLayout
    )
    sites = msgspec.json.decode((data_dir / "dr" / STRETCH_FILE).read_bytes(), type=StretchLayout)
    route_ports = {ports.cluster for ports in layout.nodes.values()}
    assert view["mode"] == "stretch" and view["one_per_site"] is True
    streams = {row["stream"]: row for row in view["streams"]}
    assert sorted(streams["LEDGER_0"]["sites"]) == ["a", "b", "c"]
    assert all(sorted(row["sites"]) == ["a", "b", "c"] for row in streams.values())
    peer_ports: set[int] = set()
    for node in view["nodes"]:
        assert node["tagged_site"] == node["site"] == sites.sites[node["name"]]
        assert node["routes"] >= 2 and node["route_rtt_ms"], node
        # Through the relay: every route's round trip includes the WAN delay.
        assert min(node["route_rtt_ms"]) >= RELAYED_MS, node
        assert not set(node["route_peer_ports"]) & route_ports, node
        peer_ports |= set(node["route_peer_ports"])
    assert set(sites.relay_ports.values()) <= peer_ports
    assert status["dr"]["mode"] == "stretch" and status["dr"]["one_per_site"] is True
    measured = status["dr"]["route_rtt_ms"]
    assert all(min(rtts) >= RELAYED_MS for rtts in measured.values()), measured

    assert report.verdict == "pass", report.errors or report.violation_counts
    assert report.rpo_acked_lost == 0 and report.rpo_s == 0
    assert report.duplicated == 0 and report.conserved
    assert report.acked_after_cut > 0 and report.rto_s is not None
    assert len(report.killed) == 2  # the site's nats-server and its ledger replica
    # The site held the ledger leader: writes went on after a failover.
    assert any(name.startswith("p0-r") for name in report.site_led), report.site_led
    assert report.wan_rtt_ms is not None and report.wan_rtt_ms >= RELAYED_MS, report.wan_rtt_ms
    assert report.bets_per_s > 0

    # Started again from its data with no DR flag: the same sites and relay
    # ports, the cut site back in, every stream one replica per site.
    again = LocalCluster(data_dir)
    assert again.dr_mode == "stretch" and again.stretch == sites, again.stretch
    try:
        again.start(timeout_ms=120_000)
        asyncio.run(again.wait_leaders(timeout_ms=120_000))
        after = asyncio.run(stretch_view(again.data_dir, again.ops))
    finally:
        again.stop()
    assert after["one_per_site"] and all(node["up"] for node in after["nodes"]), after
    assert min(after["route_rtt_ms"]) >= RELAYED_MS, after["route_rtt_ms"]
