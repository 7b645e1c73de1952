"""Stretch mode pieces that need no running cluster: the nats-server config
of a node in one site of three (its site tag, `unique_tag`, routes and the
advertised route address through the relay, no client URLs advertised),
checked by the real server's config test; the sites' layout; a stream's
placement judged from its servers' tags; route round-trip times read from
`/routez`; and the refusals of a data dir or settings that do not fit."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.security import Permissions, SecretsLayout, ServerSecurity
from ironbook.adapters.nats.server import (
    NatsNode,
    NodePorts,
    StretchPlacement,
    nats_server_binary,
    render_config,
)
from ironbook.cli import up
from ironbook.services import dr, stretch
from ironbook.services.local_cluster import ClusterConfigError, LocalCluster
from ironbook.settings import ConfigError, DrSettings, load_settings

CLI = "import sys; from ironbook.cli import main; sys.exit(main())"
RELAY_PORTS = {"n1": 41001, "n2": 41002, "n3": 41003}
PLACEMENT = StretchPlacement(sites={"n1": "a", "n2": "b", "n3": "c"}, relay_ports=RELAY_PORTS)


def _nodes(tmp_path: Path) -> list[NatsNode]:
    return [
        NatsNode(
            name=f"n{i}",
            ports=NodePorts(client=42000 + i, cluster=43000 + i, http=44000 + i),
            node_dir=tmp_path / f"n{i}",
            process=ManagedProcess(f"n{i}", ["true"], log_path=tmp_path / "log"),
        )
        for i in (1, 2, 3)
    ]


def test_a_node_is_tagged_with_its_site_and_routes_only_through_the_relay(tmp_path: Path) -> None:
    n1, n2, n3 = _nodes(tmp_path)
    text = render_config(n2, "ironbook", [n1, n3], stretch=PLACEMENT)
    assert 'server_tags: ["site:b"]' in text
    assert 'unique_tag: "site:"' in text
    assert 'routes: ["nats-route://127.0.0.1:41001", "nats-route://127.0.0.1:41003"]' in text
    # Route gossip names the advertised address: n2's own relay port, never 43002.
    assert 'advertise: "127.0.0.1:41002"' in text
    assert "no_advertise: true" in text
    for other in (n1, n3):
        assert f":{other.ports.cluster}" not in text
    assert 'listen: "127.0.0.1:43002"' in text


def test_without_stretch_routes_go_straight_to_the_nodes(tmp_path: Path) -> None:
    n1, n2, n3 = _nodes(tmp_path)
    text = render_config(n2, "ironbook", [n1, n3])
    assert 'routes: ["nats-route://127.0.0.1:43001", "nats-route://127.0.0.1:43003"]' in text
    for absent in ("server_tags", "unique_tag", "advertise"):
        assert absent not in text


def test_a_secured_stretch_node_keeps_mutual_tls_on_its_routes(tmp_path: Path) -> None:
    n1, n2, n3 = _nodes(tmp_path)
    security = ServerSecurity(
        SecretsLayout(tmp_path / "secrets"),
        {"replica": ("UREPLICA", Permissions(publish=("ledger.*",), subscribe=("tip.>",)))},
    )
    text = render_config(n1, "ironbook", [n2, n3], security, stretch=PLACEMENT)
    cluster = text[text.index("cluster {") :]
    assert "tls {" in cluster and "verify: true" in cluster
    assert 'advertise: "127.0.0.1:41001"' in cluster


def test_the_real_server_accepts_a_stretch_config(tmp_path: Path) -> None:
    n1, n2, n3 = _nodes(tmp_path)
    n1.node_dir.mkdir()
    n1.config_path.write_text(render_config(n1, "ironbook", [n2, n3], stretch=PLACEMENT))
    tested = subprocess.run(
        [str(nats_server_binary()), "-c", str(n1.config_path), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert tested.returncode == 0, tested.stderr + tested.stdout


def test_three_nodes_three_sites_and_no_other_count() -> None:
    layout = stretch.new_layout(["n1", "n2", "n3"], [1, 2, 3], 30)
    assert layout.sites == {"n1": "a", "n2": "b", "n3": "c"}
    assert layout.placement.route_url("n3") == "nats-route://127.0.0.1:3"
    with pytest.raises(dr.DrError, match="3 nodes"):
        stretch.new_layout(["n1", "n2", "n3", "n4"], [1, 2, 3, 4], 30)


def test_a_stream_is_one_per_site_only_on_three_distinct_sites() -> None:
    sites: dict[str, str | None] = {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": None}
    spread = stretch.stream_placement("LEDGER_0", "n2", ["n1", "n3"], sites)
    assert spread.one_per_site and spread.sites == ["a", "b", "c"]
    assert not stretch.stream_placement("LEDGER_0", "n1", ["n2", "n4"], sites).one_per_site
    assert not stretch.stream_placement("LEDGER_0", "n1", ["n2"], sites).one_per_site
    assert not stretch.stream_placement("LEDGER_0", "n1", ["n2", "n5"], sites).one_per_site
    assert not stretch.stream_placement("LEDGER_0", None, [], sites).one_per_site
    assert stretch.site_of(["az:1", "site:c"]) == "c" and stretch.site_of(["az:1"]) is None


def test_route_round_trips_and_peer_ports_from_routez() -> None:
    routez = {
        "routes": [
            {"port": 41002, "did_solicit": True, "rtt": "31.2ms"},
            {"port": 51234, "did_solicit": False, "rtt": "1.5s"},
            {"port": 41002, "rtt": "bogus"},
            {"port": 41003, "rtt": "0s"},
        ]
    }
    assert stretch.route_rtts_ms(routez) == [31.2, 1500.0]
    assert stretch.route_peer_ports(routez) == [41002, 41003, 51234]
    assert stretch.route_rtts_ms({}) == [] and stretch.route_peer_ports({"routes": None}) == []


def test_a_data_dir_keeps_the_mode_it_was_made_in(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    layout = stretch.new_layout(["n1", "n2", "n3"], [41001, 41002, 41003], 30)
    stretch.write_stretch(data_dir, layout)
    assert stretch.read_stretch(data_dir) == layout
    with pytest.raises(ClusterConfigError, match="stretch cluster"):
        LocalCluster(data_dir, dr=DrSettings(enabled=True, mode="mirror"))
    with pytest.raises(ClusterConfigError, match="secured cluster"):
        LocalCluster(data_dir, secure=False)


def test_stretch_needs_a_new_data_dir(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "nats").mkdir(parents=True)
    (plain / "nats" / "cluster.json").write_text("{}")
    with pytest.raises(ClusterConfigError, match="without sites"):
        LocalCluster(plain, dr=DrSettings(enabled=True, mode="stretch"))
    paired = tmp_path / "paired"
    dr.write_site(paired, dr.SiteLayout(wan_rtt_ms=30, relay_ports=[1, 2, 3]))
    with pytest.raises(ClusterConfigError, match="mirror-mode"):
        LocalCluster(paired, dr=DrSettings(enabled=True, mode="stretch"))
    with pytest.raises(dr.DrError, match="not a stretch cluster"):
        stretch.read_stretch(plain)


def test_stretch_settings_refuse_a_plaintext_cluster() -> None:
    with pytest.raises(ConfigError, match="stretch"):
        load_settings(None, {"dr": {"enabled": True, "mode": "stretch"}, "nats": {"secure": False}})


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, "up", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_up_refuses_mirror_and_stretch_together_and_unknown_modes(tmp_path: Path) -> None:
    both = _up("--data-dir", str(tmp_path / "d"), "--dr-site", "--dr-mode", "stretch")
    assert both.returncode == 2 and "--dr-mode stretch alone" in both.stderr
    bogus = _up("--data-dir", str(tmp_path / "d"), "--dr-mode", "sideways")
    assert bogus.returncode == 2 and "invalid choice" in bogus.stderr
    assert "--dr-mode" in _up("--help").stdout


def _up_settings_of(*argv: str) -> object:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    return up.up_settings(parser.parse_args(["up", *argv])).dr


def test_dr_mode_mirror_is_dr_site_and_stretch_is_its_own_mode() -> None:
    assert _up_settings_of("--dr-mode", "mirror") == _up_settings_of("--dr-site")
    assert _up_settings_of("--dr-site") == DrSettings(enabled=True, mode="mirror")
    assert _up_settings_of("--dr-mode", "stretch", "--wan-rtt-ms", "50") == DrSettings(
        enabled=True, mode="stretch", wan_rtt_ms=50
    )
    assert _up_settings_of() == DrSettings()
