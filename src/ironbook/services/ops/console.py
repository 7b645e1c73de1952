"""The alert receiver and ops console: one process, one ops port.

    POST /alerts/webhook   Alertmanager's webhook receiver (docs/alerting.md)
    GET  /console          the page (docs/console.md)
    POST /console/login    an admin or auditor token -> an HttpOnly session cookie
    GET  /console/state    the console's state now (JSON; needs the cookie)
    GET  /console/events   the same, pushed on every change (Server-Sent Events)
    GET  /metrics          the receiver's own metrics
    GET  /healthz          alive

The receiver and the console share a process because the console shows the
alerts the receiver holds: one place keeps them, and Prometheus is queried
once a second for every viewer together. Tokens are checked by the gateway's
verifier (`services.gateway.auth`); only `admin` and `auditor` may look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ironbook.adapters.audit.events import NoteEvent
from ironbook.replication.concurrency import wait_for
from ironbook.services.gateway.auth import AuthError, TokenVerifier
from ironbook.services.metrics_http import process_registry
from ironbook.services.ops.alerts import (
    AlertBook,
    AlertRecord,
    BadNotification,
    decode_notification,
    note_alert,
    now_ms,
)
from ironbook.services.ops.cluster_view import PrometheusUnavailable

log = logging.getLogger("ironbook.ops")

CONSOLE_ROLES = frozenset({"admin", "auditor"})
SESSION_COOKIE = "ironbook_ops"
REFRESH_S = 1.0
SSE_KEEPALIVE_S = 15.0

ReadCluster = Callable[[], Awaitable[dict[str, Any]]]
Publish = Callable[[AlertRecord], Awaitable[None]]


class Console:
    """The state every viewer sees, refreshed once a second and on every
    alert; `version` grows with each change."""

    def __init__(
        self,
        book: AlertBook,
        read_cluster: ReadCluster,
        publish: Publish,
        links: dict[str, str],
        note_event: NoteEvent,
    ) -> None:
        self.book = book
        self._read_cluster = read_cluster
        self._publish = publish
        self._note_event = note_event
        self.links = links
        self.cluster: dict[str, Any] = {}
        self.cluster_error: str | None = None
        self.version = 0
        self._changed = asyncio.Condition()

    def state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at_ms": now_ms(),
            "cluster": self.cluster,
            "cluster_error": self.cluster_error,
            "firing": [msgspec.to_builtins(r) for r in self.book.firing_now()],
            "recent": [msgspec.to_builtins(r) for r in self.book.recent],
            "links": self.links,
        }

    async def _changed_now(self) -> None:
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def wait_change(self, seen: int, timeout_s: float) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._changed.wait_for(lambda: self.version > seen), timeout_s)

    async def receive(self, records: list[AlertRecord]) -> None:
        self.book.record(records)
        for record in records:
            log.warning(
                "alert %s %s %s",
                record.status,
                record.alertname,
                ",".join(f"{k}={v}" for k, v in sorted(record.labels.items())),
            )
            # Every alert is a significant event: this is the one place it
            # is noted as one (never waiting for the audit log).
            note_alert(self._note_event, record)
            await self._publish(record)
        await self._changed_now()

    async def refresh_forever(self) -> None:
        while True:
            try:
                self.cluster = await self._read_cluster()
                self.cluster_error = None
            except PrometheusUnavailable as err:
                self.cluster_error = str(err)
            await self._changed_now()
            await asyncio.sleep(REFRESH_S)

    def collect(self) -> list[Metric]:
        received = CounterMetricFamily(
            "ironbook_alerts_received", "Alerts received from Alertmanager", labels=["status"]
        )
        for status, count in self.book.received.items():
            received.add_metric([status], count)
        firing = GaugeMetricFamily("ironbook_alerts_firing", "Alerts firing now")
        firing.add_metric([], len(self.book.firing))
        return [received, firing]


class _Routes:
    def __init__(self, console: Console, verifier: TokenVerifier) -> None:
        self.console = console
        self.verifier = verifier
        self.registry = process_registry()
        self.registry.register(console)
        self.page = resources.files("ironbook.services.ops").joinpath("console.html").read_text()

    def viewer(self, request: Request) -> str | None:
        """The role behind the session cookie, or None."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        try:
            principal = self.verifier.verify(f"Bearer {token}")
        except AuthError:
            return None
        return principal.role if principal.role in CONSOLE_ROLES else None

    async def webhook(self, request: Request) -> Response:
        body = await request.body()
        try:
            records = decode_notification(body, now_ms())
        except BadNotification as err:
            return JSONResponse({"code": "bad_notification", "message": str(err)}, 400)
        await self.console.receive(records)
        return JSONResponse({"recorded": len(records)})

    async def login(self, request: Request) -> Response:
        try:
            token = msgspec.json.decode(await request.body(), type=dict[str, str]).get("token", "")
        except msgspec.MsgspecError:
            return JSONResponse({"code": "bad_request", "message": 'send {"token": ...}'}, 400)
        try:
            principal = self.verifier.verify(f"Bearer {token}")
        except AuthError as err:
            return JSONResponse({"code": "unauthorized", "message": err.reason}, 401)
        if principal.role not in CONSOLE_ROLES:
            return JSONResponse(
                {"code": "forbidden", "message": "the console is for admin and auditor tokens"},
                403,
            )
        response = JSONResponse({"role": principal.role})
        response.set_cookie(
            SESSION_COOKIE, token, httponly=True, samesite="strict", path="/console"
        )
        return response

    async def state(self, request: Request) -> Response:
        if self.viewer(request) is None:
            return _LOG_IN
        return JSONResponse(self.console.state())

    async def events(self, request: Request) -> Response:
        if self.viewer(request) is None:
            return _LOG_IN
        console = self.console

        async def stream() -> AsyncIterator[bytes]:
            seen = -1
            while True:
                if console.version > seen:
                    seen = console.version
                    yield b"data: " + msgspec.json.encode(console.state()) + b"\n\n"
                else:
                    yield b": keepalive\n\n"
                await console.wait_change(seen, SSE_KEEPALIVE_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def page_view(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"Cache-Control": "no-store"})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


_LOG_IN = JSONResponse({"code": "unauthorized", "message": "log in"}, 401)


def create_app(console: Console, verifier: TokenVerifier) -> Starlette:
    routes = _Routes(console, verifier)
    return Starlette(
        routes=[
            Route("/alerts/webhook", routes.webhook, methods=["POST"]),
            Route("/console", routes.page_view),
            Route("/console/login", routes.login, methods=["POST"]),
            Route("/console/state", routes.state),
            Route("/console/events", routes.events),
            Route("/metrics", routes.metrics),
            Route("/healthz", routes.healthz),
        ]
    )
