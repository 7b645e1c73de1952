"""Prometheus metrics of the feed provider and ingester, the settlement
service, the history projector, the supervisor and the cluster's certificates.

As for the replicas (`replica_metrics`), the work itself only adds to plain
integers on a counts object; the families are built from them when a scrape
arrives, together with the few values that need a read of NATS (a stream's
tail, a consumer's backlog), each bounded by `SAMPLE_TIMEOUT_S`, well under
Prometheus's 1 s scrape timeout, so that a slow NATS never makes a process
look down. Every class
here is a prometheus-client collector registered on the process's own
registry and served on a loopback port by `serve_metrics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ironbook.adapters.nats.security import SecretsLayout, certificate_expiries
from ironbook.replication.concurrency import wait_for
from ironbook.services.metrics_http import process_registry, serve_http
from ironbook.services.supervisor import Supervisor

SAMPLE_TIMEOUT_S = 0.5


class Sampled(Collector, Protocol):
    async def sample(self) -> None:
        """Read what the next `collect()` reports that needs I/O."""


async def _bounded(read: Awaitable[int]) -> int | None:
    """`read`'s value, or None when it fails or takes over `SAMPLE_TIMEOUT_S`:
    a scrape must answer even while NATS does not."""
    try:
        return await wait_for(read, SAMPLE_TIMEOUT_S)
    except Exception:
        return None


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, doc: str, labels: dict[str, str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


# The feed.


@dataclass(slots=True)
class ProviderCounts:
    published_messages: int = 0
    publishes: int = 0
    cursor: int = 0


class FeedProviderMetrics:
    """`feed-sim`: what the simulated provider published."""

    def __init__(self, producer: str) -> None:
        self.producer = producer
        self.counts = ProviderCounts()

    async def sample(self) -> None:
        return None

    def collect(self) -> Iterator[Metric]:
        labels = {"producer": self.producer}
        c = self.counts
        yield _counter(
            "ironbook_feed_published_messages",
            "Feed messages published by the provider",
            labels,
            c.published_messages,
        )
        yield _counter(
            "ironbook_feed_publishes",
            "Frames (JetStream publishes) of the provider",
            labels,
            c.publishes,
        )
        yield _gauge(
            "ironbook_feed_provider_cursor",
            "Cursor of the last message published",
            labels,
            c.cursor,
        )


@dataclass(slots=True)
class IngestCounts:
    """Kept by the ingester holding the producer's lease; one per process, so
    the totals survive a lost and retaken lease."""

    messages_in: int = 0
    rounds: int = 0
    market_changes: int = 0
    leading: bool = False
    down: bool = False
    read_cursor: int = 0
    applied_cursor: int = 0
    silent_s: Callable[[], float] | None = None
    """Seconds since the producer's last message with an `alive`; None while
    another ingester holds the lease."""


class FeedIngestMetrics:
    """`feed-ingest`: messages in, rounds, staleness and backlog per producer."""

    def __init__(self, producer: str, tail_cursor: Callable[[], Awaitable[int]]) -> None:
        self.producer = producer
        self.counts = IngestCounts()
        self._tail_cursor = tail_cursor
        self._tail: int | None = None

    async def sample(self) -> None:
        if self.counts.leading:
            self._tail = await _bounded(self._tail_cursor())

    def collect(self) -> Iterator[Metric]:
        labels = {"producer": self.producer}
        c = self.counts
        yield _counter(
            "ironbook_feed_ingested_messages",
            "Feed messages read by the ingester",
            labels,
            c.messages_in,
        )
        yield _counter(
            "ironbook_feed_rounds",
            "Rounds applied to every partition (one feed batch each)",
            labels,
            c.rounds,
        )
        yield _counter(
            "ironbook_feed_market_changes",
            "Market changes applied (after conflation)",
            labels,
            c.market_changes,
        )
        yield _gauge(
            "ironbook_feed_ingest_leading",
            "1 when this ingester holds the producer's lease",
            labels,
            1 if c.leading else 0,
        )
        if not c.leading or c.silent_s is None:
            return
        yield _gauge(
            "ironbook_feed_staleness_seconds",
            "Seconds since the producer's last alive message",
            labels,
            c.silent_s(),
        )
        yield _gauge(
            "ironbook_feed_producer_down",
            "1 while the producer's markets are suspended",
            labels,
            1 if c.down else 0,
        )
        yield _gauge(
            "ironbook_feed_applied_cursor",
            "Feed cursor every partition has acknowledged",
            labels,
            c.applied_cursor,
        )
        if self._tail is not None:
            yield _gauge(
                "ironbook_feed_backlog_messages",
                "Feed messages published but not read yet",
                labels,
                max(0, self._tail - c.read_cursor),
            )


# Settlement.


@dataclass(slots=True)
class SettlementCounts:
    results: dict[str, int] = field(default_factory=dict)
    """Results acted on in every partition, by kind."""
    retried: int = 0
    done_through: int = 0


class SettlementMetrics:
    """`feed-settle`: results applied and the results still waiting."""

    def __init__(self, producer: str, pending: Callable[[], Awaitable[int]]) -> None:
        self.producer = producer
        self.counts = SettlementCounts()
        self._pending = pending
        self._backlog: int | None = None

    async def sample(self) -> None:
        self._backlog = await _bounded(self._pending())

    def collect(self) -> Iterator[Metric]:
        labels = {"producer": self.producer}
        results = CounterMetricFamily(
            "ironbook_settlement_results",
            "Feed results acted on in every partition, by kind",
            labels=["producer", "kind"],
        )
        for kind, count in sorted(self.counts.results.items()):
            results.add_metric([self.producer, kind], count)
        yield results
        yield _counter(
            "ironbook_settlement_retries",
            "Result frames put back because a partition was not ready or gave no outcome",
            labels,
            self.counts.retried,
        )
        yield _gauge(
            "ironbook_settlement_settled_cursor",
            "Feed cursor of the last result acted on",
            labels,
            self.counts.done_through,
        )
        if self._backlog is not None:
            yield _gauge(
                "ironbook_settlement_backlog_frames",
                "Result frames from the feed not yet acted on in every partition",
                labels,
                self._backlog,
            )


# The history projector.


class HistoryMetrics:
    """`history`: how far the read model is behind the partition's log."""

    def __init__(
        self,
        partition: int,
        position: Callable[[], int],
        last_seq: Callable[[], Awaitable[int]],
    ) -> None:
        self.partition = str(partition)
        self._position = position
        self._last_seq = last_seq
        self._stream_last: int | None = None

    async def sample(self) -> None:
        self._stream_last = await _bounded(self._last_seq())

    def collect(self) -> Iterator[Metric]:
        labels = {"partition": self.partition}
        projected = self._position()
        yield _gauge(
            "ironbook_history_projected_sequence",
            "Last log entry folded into the read model",
            labels,
            projected,
        )
        if self._stream_last is not None:
            yield _gauge(
                "ironbook_history_lag_entries",
                "Log entries not folded into the read model yet",
                labels,
                max(0, self._stream_last - projected),
            )


# The supervisor.


class SupervisorMetrics:
    """`ironbook up`: every supervised child, read from the supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def sample(self) -> None:
        return None

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "ironbook_supervisor_restarts", "Restarts of a supervised process", labels=["child"]
        )
        up = GaugeMetricFamily(
            "ironbook_supervisor_child_up", "1 while the child process runs", labels=["child"]
        )
        backoff = GaugeMetricFamily(
            "ironbook_supervisor_backoff_seconds",
            "Wait before the child's next restart (doubles while it keeps dying)",
            labels=["child"],
        )
        for name, child in list(self._supervisor.children.items()):
            restarts.add_metric([name], child.restarts)
            up.add_metric([name], 1 if child.process.is_running() else 0)
            backoff.add_metric([name], child.backoff_ms / 1000)
        yield restarts
        yield up
        yield backoff


class CertificateMetrics:
    """`ironbook up` with TLS: the expiry of every certificate of the cluster's
    secrets (the CA's and each identity's), read from the files again when one
    changes, so that a renewed certificate shows at the next scrape."""

    def __init__(self, layout: SecretsLayout) -> None:
        self._layout = layout
        self._stamp: tuple[tuple[str, int], ...] = ()
        self._expiries: dict[str, float] = {}

    async def sample(self) -> None:
        try:
            paths = [self._layout.ca_cert, *sorted(self._layout.tls_dir.glob("*-cert.pem"))]
            stamp = tuple((path.name, path.stat().st_mtime_ns) for path in paths)
        except OSError:
            stamp = ()
        if stamp != self._stamp:
            self._stamp = stamp
            self._expiries = certificate_expiries(self._layout)

    def collect(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "ironbook_tls_certificate_expiry_timestamp_seconds",
            "When the certificate stops being valid (Unix time)",
            labels=["certificate"],
        )
        for name, when in sorted(self._expiries.items()):
            expiry.add_metric([name], when)
        yield expiry


async def serve_metrics(collectors: Sequence[Sampled], host: str, port: int) -> asyncio.Server:
    """`GET /metrics` on `host:port` (0: a free port): each collector reads
    what it needs, then they are rendered."""
    registry = process_registry()
    for collector in collectors:
        registry.register(collector)

    async def render() -> tuple[bytes, str]:
        for collector in collectors:
            await collector.sample()
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return await serve_http(render, host, port)
