"""A Prometheus collector for NATS servers.

    python -m ironbook.bootstrap nats-exporter --monitor-urls http://127.0.0.1:8222,...

NATS has no Prometheus endpoint of its own and no Debian or PyPI package ships
prometheus-nats-exporter, so this process scrapes each server's monitoring
port (`/healthz`, `/varz`, `/jsz?accounts=true&streams=true`) whenever
Prometheus scrapes it, and answers with the metrics docs/metrics.md lists.
Between scrapes it probes every server ten times a second
(`services.nats_stall_probe`), for the share of answers each gives late
against the others. The monitoring port has no authentication: it must
listen on loopback or the cluster's private network, and so does this
collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ironbook.adapters.nats.mirrors import MirrorState, mirror_state
from ironbook.replication.concurrency import wait_for
from ironbook.services.metrics_http import process_registry, serve_http
from ironbook.services.nats_stall_probe import StallProbe

log = logging.getLogger("ironbook.nats_exporter")

_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_TIMED_OUT = 0.9
"""A scrape that took this share of its timeout ran out of time."""


@dataclass
class ServerView:
    """What one scrape learned about one server (`server` is its monitoring
    address, known even when the server is down)."""

    server: str
    healthy: bool = False
    reachable: bool = False
    response_s: float | None = None
    """How long the three endpoints took to answer in full (fetched at once,
    so the slowest: `/jsz`, tens of KB), or to time out; None when the
    server refused them at once (it is not running)."""
    varz: Mapping[str, Any] = field(default_factory=dict)
    jsz: Mapping[str, Any] = field(default_factory=dict)


async def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """(status, body) of a plain-HTTP GET; (0, b"") when it cannot be reached."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    async def get() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
            await writer.drain()
            # HTTP/1.0: the server closes the connection after the body.
            response = bytearray()
            while chunk := await reader.read(65_536):
                response += chunk
                if len(response) > _MAX_RESPONSE_BYTES:
                    return 0, b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = bytes(response).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split(b" ")
        return int(status_line[1]) if len(status_line) > 1 else 0, body

    try:
        return await wait_for(get(), timeout_s)
    except (OSError, TimeoutError, ValueError):
        return 0, b""


async def scrape_server(monitor_url: str, timeout_s: float) -> ServerView:
    """All three endpoints at once, so that a frozen server costs one timeout,
    which stays under Prometheus's scrape timeout."""
    view = ServerView(server=urlsplit(monitor_url).netloc)
    base = monitor_url.rstrip("/")
    paths = ("/healthz", "/varz", "/jsz?accounts=true&streams=true")
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(http_get(base + path, timeout_s)) for path in paths]
    took = time.perf_counter() - started
    (health, _), varz, jsz = (task.result() for task in tasks)
    if any(task.result()[0] != 0 for task in tasks) or took >= timeout_s * _TIMED_OUT:
        # A server that let the time run out (a throttled link, a frozen
        # process) is as slow as the timeout; only one that refused at once
        # (not running) has no answer time.
        view.response_s = took
    view.healthy = health == 200
    view.varz, view.jsz = _json_object(*varz), _json_object(*jsz)
    view.reachable = bool(view.varz or view.jsz)
    return view


def _json_object(status: int, body: bytes) -> Mapping[str, Any]:
    if status != 200:
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def scrape_all(monitor_urls: Sequence[str], timeout_s: float) -> list[ServerView]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(scrape_server(url, timeout_s)) for url in monitor_urls]
    return [task.result() for task in tasks]


def _unix_time(text: object) -> float | None:
    """An RFC 3339 time as NATS writes it (nanoseconds, `Z`), in Unix seconds."""
    if not isinstance(text, str):
        return None
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return None


def _streams(jsz: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for account in jsz.get("account_details") or ():
        yield from account.get("stream_detail") or ()


def mirror_of(stream: Mapping[str, Any], server_name: str) -> MirrorState | None:
    """A `/jsz` stream detail's mirror state, if it is a mirror and
    `server_name` leads it (only the leader's view counts: one series per
    stream, and a follower's may be stale)."""
    if not isinstance(stream.get("mirror"), Mapping):
        return None
    if not server_name or (stream.get("cluster") or {}).get("leader") != server_name:
        return None
    return mirror_state(stream)


class NatsCollector(Collector):
    """Renders the last scrape's views as metric families."""

    def __init__(self, probe: StallProbe | None = None) -> None:
        self.views: list[ServerView] = []
        self.probe = probe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def gauge(name: str, help_text: str, labels: Sequence[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, labels=list(labels))

        up = gauge("ironbook_nats_server_up", "1 when /healthz answers 200", ["server"])
        reachable = gauge(
            "ironbook_nats_server_reachable", "1 when the monitoring port answers", ["server"]
        )
        response = gauge(
            "ironbook_nats_server_response_seconds",
            "Time for the server's monitoring endpoints to answer in full",
            ["server"],
        )
        stalled = gauge(
            "ironbook_nats_server_stalled_ratio",
            "Share of the last seconds' probes the server answered late against the "
            "quickest server (stopped or starved)",
            ["server"],
        )
        for server, ratio in (self.probe.ratios() if self.probe is not None else {}).items():
            stalled.add_metric([server], ratio)
        info = gauge(
            "ironbook_nats_server_info",
            "Server name, cluster and version (always 1)",
            ["server", "server_name", "cluster", "version"],
        )
        connections = gauge("ironbook_nats_connections", "Client connections", ["server"])
        started = gauge(
            "ironbook_nats_server_start_time_seconds",
            "When the server process started (Unix time)",
            ["server"],
        )
        enabled = gauge("ironbook_nats_jetstream_enabled", "1 when JetStream runs", ["server"])
        meta = gauge(
            "ironbook_nats_jetstream_meta_leader_known",
            "1 when the server knows a JetStream meta leader",
            ["server"],
        )
        used = gauge(
            "ironbook_nats_jetstream_storage_used_bytes", "JetStream file storage used", ["server"]
        )
        reserved = gauge(
            "ironbook_nats_jetstream_storage_reserved_bytes",
            "JetStream file storage limit (max_file_store)",
            ["server"],
        )
        labels = ["server", "stream"]
        messages = gauge("ironbook_nats_stream_messages", "Messages in the stream", labels)
        size = gauge("ironbook_nats_stream_bytes", "Bytes in the stream", labels)
        leader = gauge(
            "ironbook_nats_stream_is_leader", "1 when this server leads the stream", labels
        )
        current = gauge(
            "ironbook_nats_stream_replicas_current",
            "Replicas of the stream current with its leader, as this server sees them",
            labels,
        )
        lagging = gauge(
            "ironbook_nats_stream_replicas_lagging",
            "Replicas of the stream not current with its leader, as this server sees them",
            labels,
        )
        mirror_lag = gauge(
            "ironbook_dr_mirror_lag_entries",
            "Entries a DR mirror is behind its origin stream, as the mirror's leader knows it",
            ["stream"],
        )
        mirror_active = gauge(
            "ironbook_dr_mirror_active_seconds",
            "Seconds since a DR mirror last heard from its origin stream",
            ["stream"],
        )
        for view in self.views:
            server = view.server
            up.add_metric([server], 1 if view.healthy else 0)
            reachable.add_metric([server], 1 if view.reachable else 0)
            if view.response_s is not None:
                response.add_metric([server], view.response_s)
            if not view.reachable:
                continue
            varz, jsz = view.varz, view.jsz
            cluster = (varz.get("cluster") or {}).get("name", "")
            info.add_metric(
                [
                    server,
                    str(varz.get("server_name", "")),
                    str(cluster),
                    str(varz.get("version", "")),
                ],
                1,
            )
            if "connections" in varz:
                connections.add_metric([server], float(varz["connections"]))
            start = _unix_time(varz.get("start"))
            if start is not None:
                started.add_metric([server], start)
            js_on = bool(jsz) and not jsz.get("disabled", False)
            enabled.add_metric([server], 1 if js_on else 0)
            if not js_on:
                continue
            name = str(varz.get("server_name", ""))
            meta.add_metric([server], 1 if (jsz.get("meta_cluster") or {}).get("leader") else 0)
            used.add_metric([server], float(jsz.get("storage", 0)))
            reserved.add_metric([server], float((jsz.get("config") or {}).get("max_storage", 0)))
            for stream in _streams(jsz):
                key = [server, str(stream.get("name", ""))]
                state = stream.get("state") or {}
                messages.add_metric(key, float(state.get("messages", 0)))
                size.add_metric(key, float(state.get("bytes", 0)))
                group = stream.get("cluster") or {}
                leader.add_metric(key, 1 if name and group.get("leader") == name else 0)
                peers = group.get("replicas") or ()
                current.add_metric(key, sum(1 for p in peers if p.get("current")))
                lagging.add_metric(key, sum(1 for p in peers if not p.get("current")))
                mirror = mirror_of(stream, name)
                if mirror is not None:
                    if mirror.lag_entries is not None:
                        mirror_lag.add_metric([mirror.stream], mirror.lag_entries)
                    if mirror.active_s is not None:
                        mirror_active.add_metric([mirror.stream], mirror.active_s)
        yield from (up, reachable, response, stalled, info, connections, started)
        yield from (enabled, meta, used, reserved)
        yield from (messages, size, leader, current, lagging, mirror_lag, mirror_active)


class NatsExporter:
    def __init__(self, monitor_urls: Sequence[str], timeout_s: float) -> None:
        self._urls = list(monitor_urls)
        self._timeout_s = timeout_s
        self.probe = StallProbe(self._urls)
        """Run by `serve` beside the scrapes."""
        self.collector = NatsCollector(self.probe)
        self.registry = process_registry()
        self.registry.register(self.collector)
        self._lock = asyncio.Lock()

    async def exposition(self) -> tuple[bytes, str]:
        """Scrape every server now and render the result."""
        async with self._lock:
            self.collector.views = await scrape_all(self._urls, self._timeout_s)
            return generate_latest(self.registry), CONTENT_TYPE_LATEST


async def serve(exporter: NatsExporter, host: str, port: int, stop: asyncio.Event) -> None:
    server = await serve_http(exporter.exposition, host, port)
    async with server, asyncio.TaskGroup() as group:
        group.create_task(exporter.probe.run(stop))
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        log.info("serving NATS metrics on http://%s:%d/metrics", bound_host, bound_port)
        await stop.wait()
