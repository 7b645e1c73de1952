"""Prometheus metrics of one gateway worker.

When `PROMETHEUS_MULTIPROC_DIR` is set (as `ironbook up` does for its
workers) every worker writes its samples there and `/metrics` on any worker
shows the sum over all of them, so a scrape through the shared port sees
the whole gateway, not one random worker. The workers share one scrape
target, so a worker's death shows in its own metrics: the count of workers
running drops (each scrape first forgets the workers that died), and each
worker's start time is its own series (`worker` label), which changes when
a worker is started again.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.routing import Route
from starlette.types import Scope

from ironbook.adapters.procfs import pid_alive

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTE_SCOPE_KEY = "ironbook.route"
"""Set by a handler that answers ahead of the router (the edge's fast path)."""
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
_MAX_LABEL_SETS = 1_000
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class GatewayMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, worker_id: str = "", workers: int = 1
    ) -> None:
        """`worker_id`: this worker's name (`gw-1`), for its start time;
        `workers`: how many workers the host should run."""
        registry = registry or REGISTRY
        self._registry = registry
        self.started = Gauge(
            "ironbook_gateway_worker_start_time_seconds",
            "When the gateway worker started (Unix time)",
            ["worker"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.running = Gauge(
            "ironbook_gateway_workers",
            "Gateway workers running on the host",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.expected = Gauge(
            "ironbook_gateway_workers_expected",
            "Gateway workers the host should run",
            multiprocess_mode="max",
            registry=registry,
        )
        if worker_id:
            self.started.labels(worker=worker_id).set(time.time())
            self.running.set(1)
            self.expected.set(workers)
        self.requests = Counter(
            "ironbook_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "ironbook_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.inflight = Gauge(
            "ironbook_gateway_inflight_ledger_requests",
            "Ledger requests in flight",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.shed = Counter(
            "ironbook_gateway_shed_total",
            "Requests refused to protect the service, by reason",
            ["reason"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "ironbook_gateway_auth_failures_total",
            "Requests with missing or invalid credentials, by reason",
            ["reason"],
            registry=registry,
        )
        self._routes: dict[Any, str] = {}
        self._children: dict[tuple[str, str, int], _Pending] = {}
        """(method, route, status) -> its labelled counter and histogram and
        the observations not yet written to them. Bounded: routes are
        templates and statuses few."""

    def learn_routes(self, app: Any) -> None:
        """Label requests by route template (`/v1/bets/{bet_id}`), never by raw
        path: raw paths would let any client create unbounded label sets."""
        for route in app.routes:
            if isinstance(route, Route):
                self._routes[route.endpoint] = route.path

    def route_of(self, scope: Scope) -> str:
        route = scope.get(ROUTE_SCOPE_KEY)
        if route is not None:
            return str(route)
        return self._routes.get(scope.get("endpoint"), "unmatched")

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request. Kept in memory until `flush`: with
        `PROMETHEUS_MULTIPROC_DIR` every `inc` writes a shared file, which
        cost more than all the rest of the request's accounting."""
        key = (method, route, status)
        pending = self._children.get(key)
        if pending is None:
            if method not in _METHODS:
                method = "OTHER"
            pending = _Pending(
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(route=route),
            )
            if len(self._children) >= _MAX_LABEL_SETS:
                pending.count, pending.seconds_sum = 1, seconds
                pending.buckets[bisect.bisect_left(_LATENCY_BUCKETS_S, seconds)] = 1
                pending.flush()
                return
            self._children[key] = pending
        pending.count += 1
        pending.seconds_sum += seconds
        pending.buckets[bisect.bisect_left(_LATENCY_BUCKETS_S, seconds)] += 1

    def flush(self, inflight_ledger_requests: int | None = None) -> None:
        """Write what `observe` kept (the gateway calls this every second and
        before each scrape), and the in-flight gauge's current value."""
        for pending in self._children.values():
            if pending.count:
                pending.flush()
        if inflight_ledger_requests is not None:
            self.inflight.set(inflight_ledger_requests)

    def exposition(self) -> tuple[bytes, str]:
        self.flush()
        if os.environ.get(MULTIPROC_ENV):
            # A worker killed since the last scrape leaves the sums now.
            forget_dead_workers()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")


def forget_dead_workers() -> list[int]:
    """Drop the live-gauge samples (`livesum`) that dead workers left in
    `PROMETHEUS_MULTIPROC_DIR`: a worker killed with SIGKILL never says it
    died, and it would stay counted as running, with its last in-flight
    count, for good. Called before every scrape. The pids forgotten."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return []
    dead = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is not None and not pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


class _Pending:
    """One label set's counter and histogram, and what they have not been told yet."""

    __slots__ = ("buckets", "count", "counter", "histogram", "seconds_sum")

    def __init__(self, counter: Any, histogram: Any) -> None:
        self.counter = counter
        self.histogram = histogram
        self.count = 0
        self.seconds_sum = 0.0
        self.buckets = [0] * (len(_LATENCY_BUCKETS_S) + 1)
        """Observations per bucket (upper bounds `_LATENCY_BUCKETS_S`, then +Inf)."""
        assert len(histogram._buckets) == len(self.buckets)

    def flush(self) -> None:
        self.counter.inc(self.count)
        # prometheus_client has no public way to add many observations at
        # once; its histogram child is a sum and one counter per bucket.
        self.histogram._sum.inc(self.seconds_sum)
        for index, count in enumerate(self.buckets):
            if count:
                self.histogram._buckets[index].inc(count)
                self.buckets[index] = 0
        self.count = 0
        self.seconds_sum = 0.0
