"""The edge: plain ASGI ahead of routing, so that shedding costs next to
nothing. Request id, the client address (behind trusted proxies only, from
`X-Forwarded-For`), IP allow/deny, per-address token bucket, body size limit
and read deadline, metrics, a problem response for anything unexpected, and
the fast path for `POST /v1/bets`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time

import msgspec
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ironbook.logs import bound_request_id
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.calls import (
    BETS_PATH,
    authenticate_scope,
    place_bet,
    validation_problem,
)
from ironbook.services.gateway.metrics import ROUTE_SCOPE_KEY
from ironbook.services.gateway.odds import WS_POLICY_VIOLATION
from ironbook.services.gateway.runtime import Gateway
from ironbook.services.gateway.traffic import BadForwardedFor, retry_after_header

log = logging.getLogger("ironbook.gateway")
security_log = logging.getLogger("ironbook.security")

_UNPROTECTED_PATHS = frozenset({"/healthz", "/readyz"})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gateway = self.gateway
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id")
        if request_id is None or not (0 < len(request_id) <= 64 and request_id.isprintable()):
            request_id = os.urandom(16).hex()
        client_ip, bad_hop = self._client_ip(scope)
        scope.setdefault("state", {})
        scope["state"].update(request_id=request_id, client_ip=client_ip)
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        path = scope["path"]
        with bound_request_id(request_id):
            try:
                refusal = self._admit(scope, client_ip, path, bad_hop)
                body = b""
                if refusal is None:
                    refusal, body, receive = await self._limit_body(scope, receive)
                if refusal is not None:
                    await refusal(scope, receive, send_wrapper)
                elif path == BETS_PATH and scope["method"] == "POST" and _json_body(scope):
                    scope[ROUTE_SCOPE_KEY] = BETS_PATH
                    await self._fast_bet(scope, body, send, send_wrapper, status_holder)
                else:
                    await self.app(scope, receive, send_wrapper)
            except Exception:
                log.exception("request %s failed", request_id)
                response = p.problem_response(
                    500, "internal_error", "an unexpected error", request_id=request_id
                )
                with contextlib.suppress(Exception):
                    await response(scope, receive, send_wrapper)
            finally:
                route = gateway.metrics.route_of(scope)
                gateway.metrics.observe(
                    scope["method"], route, status_holder[0], time.perf_counter() - started
                )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The address checks of the edge, for WebSocket upgrades."""
        client_ip, bad_hop = self._client_ip(scope)
        scope.setdefault("state", {})
        scope["state"].update(request_id=os.urandom(16).hex(), client_ip=client_ip)
        gateway = self.gateway
        refused = bad_hop is not None or not gateway.ip_filter.permits(client_ip)
        if bad_hop is not None:
            self._log_bad_forwarded_for(client_ip, bad_hop, scope["path"])
        elif refused:
            gateway.metrics.shed.labels(reason="ip_denied").inc()
        elif gateway.ip_buckets.take(client_ip) > 0:
            gateway.metrics.shed.labels(reason="rate_limited_ip").inc()
            refused = True
        if refused:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        await self.app(scope, receive, send)

    async def _fast_bet(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        send_wrapper: Send,
        status_holder: list[int],
    ) -> None:
        """`POST /v1/bets` without the framework's per-request machinery (the
        hot path): the body is decoded into `BetIn` by `decode_bet`, as the
        route that documents the endpoint does, and the reply is written as
        raw ASGI messages. Same checks and same code as the route, via
        `place_bet`."""
        gateway = self.gateway
        request_id = scope["state"]["request_id"]
        try:
            principal = authenticate_scope(gateway, scope, _header(scope, b"authorization"))
            try:
                bet = m.decode_bet(body)
            except msgspec.MsgspecError as err:
                response = validation_problem(m.body_errors(err), scope["path"], request_id)
                await response(scope, _no_body, send_wrapper)
                return
            placed, headers = await place_bet(
                gateway, principal, bet, _header(scope, b"idempotency-key")
            )
        except p.ApiProblem as problem:
            response = p.problem_response(
                problem.status,
                problem.code,
                problem.detail,
                instance=BETS_PATH,
                request_id=request_id,
                headers=problem.headers,
                errors=problem.errors,
            )
            await response(scope, _no_body, send_wrapper)
            return
        content = _encode(placed)
        raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        raw_headers.extend(
            (name.lower().encode(), value.encode()) for name, value in headers.items()
        )
        status_holder[0] = 201
        await send({"type": "http.response.start", "status": 201, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})

    def _client_ip(self, scope: Scope) -> tuple[str, str | None]:
        """(the client's address, None), or (the peer's address, the
        `X-Forwarded-For` hop that could not be read)."""
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        forwarded_for = self.gateway.forwarded_for
        if not forwarded_for.trusted:
            return peer, None
        values = [
            bytes(value).decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
        ]
        try:
            return forwarded_for.client(peer, values), None
        except BadForwardedFor as err:
            return peer, str(err)

    def _log_bad_forwarded_for(self, peer: str, hop: str, path: str) -> None:
        self.gateway.metrics.shed.labels(reason="bad_forwarded_for").inc()
        security_log.warning(
            json.dumps({"event": "bad_forwarded_for", "ip": peer, "hop": hop, "path": path[:200]})
        )

    def _admit(
        self, scope: Scope, client_ip: str, path: str, bad_hop: str | None
    ) -> Response | None:
        gateway = self.gateway
        request_id = scope["state"]["request_id"]
        if bad_hop is not None:
            self._log_bad_forwarded_for(client_ip, bad_hop, path)
            return p.problem_response(
                400,
                p.VALIDATION_FAILED,
                f"X-Forwarded-For holds {bad_hop!r}, which is not an IP address",
                request_id=request_id,
            )
        if not gateway.ip_filter.permits(client_ip):
            gateway.metrics.shed.labels(reason="ip_denied").inc()
            security_log.warning(
                json.dumps({"event": "ip_denied", "ip": client_ip, "path": path[:200]})
            )
            return p.problem_response(
                403, p.FORBIDDEN, "this address may not use the API", request_id=request_id
            )
        if path in _UNPROTECTED_PATHS:
            return None
        wait_s = gateway.ip_buckets.take(client_ip)
        if wait_s > 0:
            gateway.metrics.shed.labels(reason="rate_limited_ip").inc()
            return p.problem_response(
                429,
                p.RATE_LIMITED,
                "too many requests from this address",
                request_id=request_id,
                headers={"Retry-After": retry_after_header(wait_s)},
            )
        return None

    def _too_large(self, request_id: str) -> Response:
        limit = self.gateway.settings.max_body_bytes
        return p.problem_response(
            413,
            p.PAYLOAD_TOO_LARGE,
            f"the body may be at most {limit} bytes",
            request_id=request_id,
        )

    async def _limit_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[Response | None, bytes, Receive]:
        """Read the whole body (it is small) so that an oversized one is
        refused before any parsing, chunked or not."""
        limit = self.gateway.settings.max_body_bytes
        request_id = scope["state"]["request_id"]
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return (
                    p.problem_response(
                        400, p.VALIDATION_FAILED, "bad Content-Length", request_id=request_id
                    ),
                    b"",
                    receive,
                )
            if int(declared) > limit:
                return self._too_large(request_id), b"", receive
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared in (None, "0"):
            return None, b"", receive
        chunks: list[bytes] = []
        size = 0
        deadline_s = self.gateway.settings.body_read_timeout_ms / 1000
        try:
            async with asyncio.timeout(deadline_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return self._too_large(request_id), b"", receive
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            self.gateway.metrics.shed.labels(reason="body_timeout").inc()
            return (
                p.problem_response(
                    408,
                    p.REQUEST_TIMEOUT,
                    f"the body did not arrive within {deadline_s:g} s",
                    request_id=request_id,
                    headers={"Connection": "close"},
                ),
                b"",
                receive,
            )
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, body, replay


_encode = msgspec.json.Encoder().encode


async def _no_body() -> Message:
    """`receive` for a response sent after the body was read."""
    return {"type": "http.disconnect"}


def _json_body(scope: Scope) -> bool:
    """No content type, or a JSON one: what the route would parse as JSON."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return True
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


_HEADERS_SCOPE_KEY = "ironbook.headers"


def _header(scope: Scope, name: bytes) -> str | None:
    """The first `name` header (lower case), from a table made once per request."""
    headers: dict[bytes, bytes] | None = scope.get(_HEADERS_SCOPE_KEY)
    if headers is None:
        # Reversed, so that the first of repeated headers wins.
        headers = dict(reversed(scope.get("headers", ())))
        scope[_HEADERS_SCOPE_KEY] = headers
    value = headers.get(name)
    return None if value is None else bytes(value).decode("latin-1")
