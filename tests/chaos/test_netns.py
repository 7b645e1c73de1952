"""The namespace plumbing behind the `partition` and `latency` faults.

The plan tests check what would run (no root needed); the real test makes a
layout, cuts one node off, checks that a TCP connect from the host to it
fails and works again once healed, and that nothing with the run's prefix is
left afterwards. Skipped where namespaces cannot be made (not root, no `ip`).
"""

from __future__ import annotations

import functools
import ipaddress
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ironbook.adapters import netns
from ironbook.chaos import run as run_module
from ironbook.chaos.faults import FaultInjector
from ironbook.cli.chaos import parse_faults
from ironbook.services.local_cluster import LocalCluster

LAYOUT = netns.Layout(run_id="ab3x9", subnet="10.222.7.0/24", nodes=3)


def test_names_are_unique_per_run_short_enough_and_recognisable() -> None:
    names = [LAYOUT.bridge]
    for node in LAYOUT.all_nodes():
        names += [node.namespace, node.host_veth, node.peer_veth]
    assert len(set(names)) == len(names)
    assert all(len(name) <= 15 and name.startswith("ibkab3x9") for name in names)
    assert all(netns._NAME_RE.match(name) for name in names)
    assert not netns._NAME_RE.match("eth0")
    assert not netns._NAME_RE.match("ibkab3x9x1")


def test_addresses_host_on_the_bridge_one_per_node() -> None:
    assert LAYOUT.host_ip == "10.222.7.1"
    assert [node.ip for node in LAYOUT.all_nodes()] == ["10.222.7.11", "10.222.7.12", "10.222.7.13"]
    assert LAYOUT.node(2).prefix == ["ip", "netns", "exec", "ibkab3x9n2"]
    with pytest.raises(ValueError):
        LAYOUT.node(4)


def test_create_plan_makes_bridge_namespaces_and_veth_pairs() -> None:
    plan = netns.plan_create(LAYOUT)
    assert plan[0] == ["ip", "link", "add", "ibkab3x9br", "type", "bridge"]
    assert ["ip", "addr", "add", "10.222.7.1/24", "dev", "ibkab3x9br"] in plan
    assert ["ip", "netns", "add", "ibkab3x9n1"] in plan
    assert [
        "ip", "link", "add", "ibkab3x9h1", "type", "veth", "peer", "name", "ibkab3x9p1",
    ] in plan  # fmt: skip
    assert ["ip", "link", "set", "ibkab3x9p1", "netns", "ibkab3x9n1"] in plan
    assert ["ip", "link", "set", "ibkab3x9h1", "master", "ibkab3x9br"] in plan
    assert [
        "ip", "netns", "exec", "ibkab3x9n3", "ip", "addr", "add", "10.222.7.13/24",
        "dev", "ibkab3x9p3",
    ] in plan  # fmt: skip
    assert ["ip", "netns", "exec", "ibkab3x9n2", "ip", "link", "set", "lo", "up"] in plan


def test_destroy_plan_removes_everything_the_create_plan_made() -> None:
    plan = netns.plan_destroy(LAYOUT)
    assert plan[-1] == ["ip", "link", "del", "ibkab3x9br"]
    for node in LAYOUT.all_nodes():
        assert ["ip", "link", "del", node.host_veth] in plan
        assert ["ip", "netns", "del", node.namespace] in plan


def test_fault_plans() -> None:
    node = LAYOUT.node(2)
    assert netns.plan_cut(node) == [["ip", "link", "set", "ibkab3x9h2", "down"]]
    assert netns.plan_heal(node) == [["ip", "link", "set", "ibkab3x9h2", "up"]]
    delay = netns.plan_netem_delay(node, 50, 10)
    assert delay[0] == [
        "tc", "qdisc", "replace", "dev", "ibkab3x9h2", "root", "netem", "delay", "50ms", "10ms",
    ]  # fmt: skip
    assert delay[1][:4] == ["ip", "netns", "exec", "ibkab3x9n2"]
    assert delay[1][4:] == [
        "tc", "qdisc", "replace", "dev", "ibkab3x9p2", "root", "netem", "delay", "50ms", "10ms",
    ]  # fmt: skip
    slow = netns.plan_slow_link(node, 2_000, 100)
    assert slow[0][:7] == ["tc", "qdisc", "replace", "dev", "ibkab3x9h2", "root", "tbf"]
    assert "2000kbit" in slow[0] and "100ms" in slow[0]
    assert netns.plan_clear_latency(node)[0] == ["tc", "qdisc", "del", "dev", "ibkab3x9h2", "root"]


def test_subnet_avoids_networks_in_use() -> None:
    used = [ipaddress.IPv4Network(f"10.{b}.0.0/16") for b in range(200, 251) if b != 233]
    subnet = ipaddress.IPv4Network(netns.pick_subnet(random.Random(1), used))
    assert subnet.prefixlen == 24 and str(subnet).startswith("10.233.")
    with pytest.raises(netns.NetnsError):
        netns.pick_subnet(random.Random(1), [ipaddress.IPv4Network("10.0.0.0/8")])


def test_fault_names_accept_dashes_and_refuse_unknown_ones() -> None:
    assert parse_faults("leader-kill,partition, latency,gateway-kill") == [
        "leader_kill",
        "partition",
        "latency",
        "gateway_kill",
    ]
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("meteor")


def _serve_once_per_connect(node: netns.NodeNetwork, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(({node.ip!r}, {port}))\n"
        "s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(b'ok')\n"
        "    c.close()\n"
    )
    return subprocess.Popen([*node.prefix, sys.executable, "-c", code])


def _reachable(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5) as conn:
            return conn.recv(2) == b"ok"
    except OSError:
        return False


def _eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason()))
def test_a_real_partition_cuts_one_node_off_and_heals_and_teardown_leaves_nothing() -> None:
    network = netns.NamespaceNetwork.create(3)
    run_id = network.layout.run_id
    port = 7911
    servers = []
    try:
        assert run_id in netns.leftover_names()
        assert run_id in netns.live_runs()
        servers = [_serve_once_per_connect(node, port) for node in network.nodes]
        for ip in (node.ip for node in network.nodes):
            assert _eventually(functools.partial(_reachable, ip, port)), ip

        network.cut(2)
        assert not network.link_up(2)
        assert not _reachable(network.node(2).ip, port)
        assert _reachable(network.node(1).ip, port)  # the others stay reachable

        network.heal(2)
        assert network.link_up(2)
        assert _eventually(lambda: _reachable(network.node(2).ip, port))

        how = network.add_latency(3, 50, 10)
        assert network.latency_method in how
        qdiscs = subprocess.run(
            ["tc", "qdisc", "show", "dev", network.node(3).host_veth],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert network.latency_method in qdiscs
        assert _eventually(lambda: _reachable(network.node(3).ip, port))
        network.heal_everything()
        qdiscs = subprocess.run(
            ["tc", "qdisc", "show", "dev", network.node(3).host_veth],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert network.latency_method not in qdiscs
    finally:
        for server in servers:
            server.kill()
            server.wait()
        network.destroy()
    assert run_id not in netns.leftover_names()
    assert run_id not in netns.live_runs()
    assert not (netns.STATE_DIR / f"{run_id}.json").exists()


@pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason()))
def test_cleanup_removes_what_a_dead_run_left_and_spares_live_runs() -> None:
    live = netns.NamespaceNetwork.create(1)
    dead_layout = netns.Layout(
        run_id=netns.new_run_id(random.Random()), subnet="10.199.9.0/24", nodes=1
    )
    try:
        for argv in netns.plan_create(dead_layout):
            netns._run(argv)
        assert dead_layout.run_id in netns.leftover_names()
        removed = netns.cleanup_leftovers()
        assert dead_layout.bridge in removed and dead_layout.node(1).namespace in removed
        assert dead_layout.run_id not in netns.leftover_names()
        assert live.layout.run_id in netns.leftover_names()
    finally:
        netns._destroy(dead_layout)
        live.destroy()
    assert live.layout.run_id not in netns.leftover_names()


def test_without_namespaces_the_network_kinds_are_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "unavailable_reason", lambda: "network namespaces need root")
    said: list[str] = []
    network, skipped = run_module._network_for(["leader_kill", "latency", "partition"], said.append)
    assert network is None
    assert skipped == {
        "latency": "network namespaces need root",
        "partition": "network namespaces need root",
    }
    assert said == [
        "skipping latency: network namespaces need root",
        "skipping partition: network namespaces need root",
    ]
    assert run_module._network_for(["leader_kill"], said.append) == (None, {})


def test_the_injector_says_which_kinds_a_cluster_cannot_take(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")  # on loopback, no gateway; not started
    injector = FaultInjector(cluster, random.Random(1))
    assert injector.unavailable("leader_kill") is None
    assert "network namespaces" in str(injector.unavailable("partition"))
    assert "network namespaces" in str(injector.unavailable("latency"))
    assert "gateway workers" in str(injector.unavailable("gateway_kill"))
    cluster.nats.close()
