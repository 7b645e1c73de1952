"""The NATS collector against a real 3-node JetStream cluster: it reports
every server up with JetStream and a meta leader, the ledger stream with its
messages, one leader and three current replicas, the storage used and its
limit, and how long each takes to answer; a stopped server is reported down
(no answer time) and the others healthy; a frozen one is unreachable and as
slow as the timeout; all served over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.services.nats_exporter import NatsExporter, http_get, serve_http
from ironbook.services.nats_stall_probe import StallProbe

TIMEOUT_S = 2.0
RECOVERY_S = 30.0
UP = "ironbook_nats_server_up"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def _append_entries(url: str) -> None:
    nc = await connect_nats(url, name="exporter-test")
    try:
        log = await NatsLog.open(nc, 0, replicas=3)
        for seq in range(3):
            await log.append(b"entry", expected_last_seq=seq, batch_id=f"b{seq}")
    finally:
        await close_nats(nc)


async def _scrape_over_http(exporter: NatsExporter) -> str:
    server = await serve_http(exporter.exposition, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        status, body = await http_get(f"http://127.0.0.1:{port}/metrics", 10.0)
    assert status == 200
    return body.decode()


def _scrape_until(exporter: NatsExporter, done: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + RECOVERY_S
    while True:
        found = samples(asyncio.run(_scrape_over_http(exporter)))
        if done(found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.5)


def test_the_collector_reports_servers_jetstream_and_streams(
    nats_cluster: LocalNatsCluster,
) -> None:
    asyncio.run(_append_entries(nats_cluster.url))
    names = {
        node.monitor_url.removeprefix("http://"): name for name, node in nats_cluster.nodes.items()
    }
    exporter = NatsExporter([node.monitor_url for node in nats_cluster.nodes.values()], TIMEOUT_S)
    # Right after the stream is created a follower's /healthz may answer 503
    # until its replica is current: wait (bounded) for all three.
    found = _scrape_until(exporter, lambda f: all(value(f, UP, server=s) == 1 for s in names))

    leaders = 0.0
    for server, name in names.items():
        assert value(found, "ironbook_nats_server_up", server=server) == 1
        assert value(found, "ironbook_nats_server_reachable", server=server) == 1
        assert value(found, "ironbook_nats_jetstream_enabled", server=server) == 1
        assert value(found, "ironbook_nats_jetstream_meta_leader_known", server=server) == 1
        assert value(found, "ironbook_nats_jetstream_storage_used_bytes", server=server) >= 0
        assert value(found, "ironbook_nats_jetstream_storage_reserved_bytes", server=server) > 0
        assert 0 < value(found, "ironbook_nats_server_response_seconds", server=server) < TIMEOUT_S
        info = [
            key
            for key in found
            if key[0] == "ironbook_nats_server_info" and ("server", server) in key[1]
        ]
        assert info and ("server_name", name) in info[0][1]
        stream = {"server": server, "stream": "LEDGER_0"}
        # A follower may still be catching up on the last appends.
        assert 0 <= value(found, "ironbook_nats_stream_messages", **stream) <= 3
        leaders += value(found, "ironbook_nats_stream_is_leader", **stream)
    assert leaders == 1
    leader = next(
        server
        for server in names
        if value(found, "ironbook_nats_stream_is_leader", server=server, stream="LEDGER_0")
    )
    # The leader sees both of its followers, at least one of them current
    # (every append needed a quorum); the other may still be catching up.
    key = {"server": leader, "stream": "LEDGER_0"}
    assert value(found, "ironbook_nats_stream_messages", **key) == 3
    assert value(found, "ironbook_nats_stream_bytes", **key) > 0
    assert value(found, "ironbook_nats_jetstream_storage_used_bytes", server=leader) > 0
    current = value(found, "ironbook_nats_stream_replicas_current", **key)
    lagging = value(found, "ironbook_nats_stream_replicas_lagging", **key)
    assert current >= 1 and current + lagging == 2

    nats_cluster.stop_node("n3")
    stopped = nats_cluster.nodes["n3"].monitor_url.removeprefix("http://")
    found = samples(asyncio.run(_scrape_over_http(exporter)))
    assert value(found, "ironbook_nats_server_up", server=stopped) == 0
    assert value(found, "ironbook_nats_server_reachable", server=stopped) == 0
    assert not [
        key
        for key in found
        if ("server", stopped) in key[1] and key[0] not in (UP, "ironbook_nats_server_reachable")
    ]
    # The two others may report unhealthy for a moment while their stream
    # groups notice the loss; they are healthy again within a bounded wait.
    found = _scrape_until(exporter, lambda f: sum(value(f, UP, server=s) for s in names) == 2)
    assert value(found, "ironbook_nats_server_up", server=stopped) == 0
    assert value(found, "ironbook_nats_server_reachable", server=stopped) == 0

    # A frozen server accepts connections (the kernel does) but answers
    # nothing: it is unreachable, and as slow as the timeout.
    frozen = nats_cluster.nodes["n2"]
    frozen.process.pause()
    try:
        found = samples(asyncio.run(_scrape_over_http(exporter)))
    finally:
        frozen.process.resume()
    address = frozen.monitor_url.removeprefix("http://")
    assert value(found, "ironbook_nats_server_reachable", server=address) == 0
    assert value(found, "ironbook_nats_server_response_seconds", server=address) >= 0.9 * TIMEOUT_S


def test_the_stall_probe_names_the_frozen_server_and_only_it(
    nats_cluster: LocalNatsCluster,
) -> None:
    """Probes of real servers: one frozen (SIGSTOP) for the whole window is
    stalled at every probe, the others at few at most (a loaded test
    machine may delay a healthy server's answer now and then); once it runs
    again its probes are answered and its ratio falls."""
    urls = [node.monitor_url for node in nats_cluster.nodes.values()]
    probe = StallProbe(urls, window_s=600.0)
    frozen = nats_cluster.nodes["n2"]
    address = frozen.monitor_url.removeprefix("http://")

    async def rounds(count: int) -> None:
        for _ in range(count):
            await probe.round()

    frozen.process.pause()
    try:
        asyncio.run(rounds(8))
    finally:
        frozen.process.resume()
    ratios = probe.ratios()
    assert ratios[address] == 1.0, ratios
    assert all(ratio <= 0.25 for server, ratio in ratios.items() if server != address), ratios

    asyncio.run(rounds(40))
    assert probe.ratios()[address] < 0.5, probe.ratios()  # most of the 40 answered in time
