"""Prometheus metrics of one gateway worker.

When `PROMETHEUS_MULTIPROC_DIR` is set (as `ironbook up` does for its
workers) every worker writes its samples there and `/metrics` on any worker
shows the sum over all of them, so a scrape through the shared port sees
the whole gateway, not one random worker.
"""

from __future__ import annotations

import os
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

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTE_SCOPE_KEY = "ironbook.route"
"""Set by a handler that answers ahead of the router (the edge's fast path)."""
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
_MAX_LABEL_SETS = 1_000
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or REGISTRY
        self._registry = registry
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
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """(method, route, status) -> labelled (counter, histogram): `labels()`
        costs more than the observation itself. Bounded: routes are templates
        and statuses few."""

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
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            if method not in _METHODS:
                method = "OTHER"
            children = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(route=route),
            )
            if len(self._children) < _MAX_LABEL_SETS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
