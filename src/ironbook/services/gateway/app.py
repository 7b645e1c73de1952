"""The gateway application: the public v1 API over the ledger client.

Every request passes the edge first (`EdgeMiddleware`: request id, IP
allow/deny, per-IP token bucket, body size limit, metrics, and a problem
response for anything unexpected), then authentication and the per-principal
token bucket, then admission control just before the ledger is asked. The
gateway keeps no state of its own: the ledger answers every read and write,
and a JetStream KV bucket holds Idempotency-Key claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import nats.errors
import pydantic
from fastapi import (
    Depends,
    FastAPI,
    Header,
    Path,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NatsClient
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ironbook import core
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.client import BadRequest, ClientConfig, GaveUp, LedgerClient
from ironbook.core import events as ev
from ironbook.core.odds import InvalidOdds, format_decimal, parse_decimal
from ironbook.core.queries import MAX_PAGE
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import (
    STAFF_ROLES,
    AuthError,
    Principal,
    TokenVerifier,
    load_verifier,
)
from ironbook.services.gateway.history import (
    HistoryError,
    HistoryPage,
    HistoryRequest,
    encode_request,
    history_subject,
)
from ironbook.services.gateway.history import decode_reply as decode_history_reply
from ironbook.services.gateway.idempotency import (
    ClaimStore,
    ClaimUnavailable,
    KeyReused,
    fingerprint,
    generated_key,
    keyed_request_id,
    valid_key,
)
from ironbook.services.gateway.metrics import ROUTE_SCOPE_KEY, GatewayMetrics
from ironbook.services.gateway.odds import (
    MAX_MARKETS_PER_CONNECTION,
    OddsHub,
    Watcher,
    parse_client_message,
)
from ironbook.services.gateway.settings import GatewaySettings
from ironbook.services.gateway.traffic import (
    Admission,
    IpFilter,
    TokenBuckets,
    retry_after_header,
)

log = logging.getLogger("ironbook.gateway")
security_log = logging.getLogger("ironbook.security")

API_TITLE = "ironbook"
READINESS_DEADLINE_MS = 1_500
HISTORY_TIMEOUT_MS = 2_000
BETS_PATH = "/v1/bets"
WS_POLICY_VIOLATION = 1008
_UNPROTECTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ProblemOut, "content": {p.PROBLEM_MEDIA_TYPE: {}}, "description": text}
    for status, text in (
        (400, "malformed request"),
        (401, "missing or invalid credentials"),
        (403, "not allowed for this principal or address"),
        (404, "no such resource"),
        (409, "conflicts with the current state, or an Idempotency-Key reused"),
        (413, "body too large"),
        (422, "invalid input or refused by the ledger"),
        (429, "rate limited"),
        (503, "overloaded or ledger unavailable"),
    )
}


@dataclass
class Gateway:
    """What a worker holds: settings, limiters and its ledger connection."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    verifier: TokenVerifier | None = None
    principal_buckets: TokenBuckets = field(init=False)
    ip_buckets: TokenBuckets = field(init=False)
    admission: Admission = field(init=False)
    ip_filter: IpFilter = field(init=False)
    nc: NatsClient | None = None
    ledger: LedgerClient | None = None
    probe: LedgerClient | None = None
    claims: ClaimStore | None = None
    odds: OddsHub | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.principal_buckets = TokenBuckets(
            s.principal_rate_per_s, s.principal_burst, max_keys=s.max_tracked_keys
        )
        self.ip_buckets = TokenBuckets(s.ip_rate_per_s, s.ip_burst, max_keys=s.max_tracked_keys)
        self.admission = Admission(s.max_inflight_ledger_requests)
        self.ip_filter = IpFilter(s.allow_cidrs, s.deny_cidrs)

    async def connect(self) -> None:
        s = self.settings
        self.verifier = load_verifier(
            algorithm=s.jwt_algorithm,
            secret_file=s.secret_file,
            public_key_file=s.jwt_public_key_file,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
        )
        self.nc = await connect_nats(s.nats_url, name=f"ironbook-gateway-{s.worker_id}")
        self.ledger = LedgerClient(
            self.nc,
            partitions=s.partitions,
            config=ClientConfig(deadline_ms=s.request_deadline_ms),
        )
        self.probe = LedgerClient(
            self.nc,
            partitions=s.partitions,
            config=ClientConfig(request_timeout_ms=500, deadline_ms=READINESS_DEADLINE_MS),
        )
        self.claims = await ClaimStore.open(self.nc.jetstream(), replicas=s.nats_replicas)
        self.odds = OddsHub(self.nc)

    async def close(self) -> None:
        for client in (self.ledger, self.probe):
            if client is not None:
                await client.close()
        if self.nc is not None:
            await close_nats(self.nc)


# The edge: plain ASGI, ahead of routing, so shedding costs next to nothing.


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
            request_id = uuid.uuid4().hex
        client_ip = self._client_ip(scope)
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
        try:
            refusal = self._admit(scope, client_ip, path)
            body = b""
            if refusal is None:
                refusal, body, receive = await self._limit_body(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            elif path == BETS_PATH and scope["method"] == "POST" and _json_body(scope):
                scope[ROUTE_SCOPE_KEY] = BETS_PATH
                response = await self._fast_bet(scope, body)
                await response(scope, receive, send_wrapper)
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
        client_ip = self._client_ip(scope)
        scope.setdefault("state", {})
        scope["state"].update(request_id=uuid.uuid4().hex, client_ip=client_ip)
        gateway = self.gateway
        refused = not gateway.ip_filter.permits(client_ip)
        if refused:
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

    async def _fast_bet(self, scope: Scope, body: bytes) -> Response:
        """`POST /v1/bets` without the framework's per-request machinery (the
        hot path: most of a request's CPU was dependency solving). Same
        model, same checks, same code as the route, via `place_bet`."""
        gateway = self.gateway
        request_id = scope["state"]["request_id"]
        try:
            principal = authenticate_scope(gateway, scope, _header(scope, b"authorization"))
            try:
                bet = m.BetIn.model_validate_json(body)
            except pydantic.ValidationError as err:
                errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in err.errors()]
                return validation_problem(errors, scope["path"], request_id)
            placed, headers = await place_bet(
                gateway, principal, bet, _header(scope, b"idempotency-key")
            )
        except p.ApiProblem as problem:
            return p.problem_response(
                problem.status,
                problem.code,
                problem.detail,
                instance=BETS_PATH,
                request_id=request_id,
                headers=problem.headers,
                errors=problem.errors,
            )
        return Response(
            placed.__pydantic_serializer__.to_json(placed),
            status_code=201,
            media_type="application/json",
            headers=headers,
        )

    def _client_ip(self, scope: Scope) -> str:
        if self.gateway.settings.trust_forwarded_for:
            forwarded = _header(scope, b"x-forwarded-for")
            if forwarded:
                return forwarded.split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    def _admit(self, scope: Scope, client_ip: str, path: str) -> Response | None:
        gateway = self.gateway
        request_id = scope["state"]["request_id"]
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

    async def _limit_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[Response | None, bytes, Receive]:
        """Read the whole body (it is small) so that an oversized one is
        refused before any parsing, chunked or not."""
        limit = self.gateway.settings.max_body_bytes
        request_id = scope["state"]["request_id"]
        too_large = p.problem_response(
            413,
            p.PAYLOAD_TOO_LARGE,
            f"the body may be at most {limit} bytes",
            request_id=request_id,
        )
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
                return too_large, b"", receive
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared in (None, "0"):
            return None, b"", receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large, b"", receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, body, replay


def _json_body(scope: Scope) -> bool:
    """No content type, or a JSON one: what the route would parse as JSON."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return True
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


# Per-request helpers.


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def authenticate(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return authenticate_scope(_gateway(request), request.scope, authorization)


def authenticate_scope(gateway: Gateway, scope: Scope, authorization: str | None) -> Principal:
    """The caller, or 401 (logged as a security event); then the caller's
    token bucket, or 429."""
    assert gateway.verifier is not None
    try:
        principal = gateway.verifier.verify(authorization)
    except AuthError as err:
        gateway.metrics.auth_failures.labels(reason=err.reason.split(":")[0]).inc()
        security_log.warning(
            json.dumps(
                {
                    "event": "auth_failed",
                    "reason": err.reason,
                    "ip": scope["state"].get("client_ip"),
                    "method": scope.get("method", "WEBSOCKET"),
                    "path": scope["path"][:200],
                    "request_id": scope["state"].get("request_id"),
                }
            )
        )
        raise p.ApiProblem(
            401,
            p.UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="ironbook"'},
        ) from None
    wait_s = gateway.principal_buckets.take(principal.sub)
    if wait_s > 0:
        gateway.metrics.shed.labels(reason="rate_limited_principal").inc()
        raise p.ApiProblem(
            429,
            p.RATE_LIMITED,
            "too many requests for this principal",
            headers={"Retry-After": retry_after_header(wait_s)},
        )
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require_role(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise p.ApiProblem(
            403, p.FORBIDDEN, f"role {principal.role!r} may not do this (needs {'/'.join(roles)})"
        )


def require_account(principal: Principal, account_id: str, *staff_roles: str) -> None:
    """The account's own bettor, or one of `staff_roles`."""
    if principal.owns(account_id) or principal.role in staff_roles:
        return
    if principal.role == "bettor":
        raise p.ApiProblem(403, p.FORBIDDEN, "a bettor may only touch its own account")
    raise p.ApiProblem(403, p.FORBIDDEN, f"role {principal.role!r} may not do this")


async def _ask(gateway: Gateway, command: core.AnyCommand | core.AnyQuery) -> core.Outcome:
    """One ledger round trip under admission control and the deadline."""
    assert gateway.ledger is not None
    if not gateway.admission.try_enter():
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503,
            p.OVERLOADED,
            "the gateway is at capacity; retry shortly",
            headers={"Retry-After": "1"},
        )
    gateway.metrics.inflight.inc()
    try:
        async with asyncio.timeout(gateway.settings.request_deadline_ms / 1000):
            return await gateway.ledger.submit(command)
    except (GaveUp, TimeoutError):
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "no ledger answer in time; a write may or may not have happened: "
            "retry with the same Idempotency-Key to find out",
            headers={"Retry-After": "1"},
        ) from None
    except BadRequest as err:
        raise p.ApiProblem(400, p.VALIDATION_FAILED, f"the ledger refused: {err}") from None
    finally:
        gateway.metrics.inflight.dec()
        gateway.admission.leave()


async def _read(gateway: Gateway, query: core.AnyQuery) -> Any:
    outcome = await _ask(gateway, query)
    if isinstance(outcome, core.Rejected):
        raise p.ApiProblem(p.rejection_status(outcome.code), outcome.code, outcome.message)
    result = outcome.result
    if isinstance(result, core.ReadRefusal):
        raise p.ApiProblem(p.rejection_status(result.code), result.code, result.message)
    return result


def _query_id() -> str:
    return f"q:{uuid.uuid4().hex}"


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the call safe to retry: the same key returns the first response. "
        "1-128 printable ASCII characters. Without it the gateway makes one.",
    ),
]


async def _write(
    request: Request,
    response: Response,
    principal: Principal,
    key: str | None,
    body: object,
    make: Callable[[str], core.AnyCommand],
) -> Any:
    result, headers = await write(
        _gateway(request), principal, request.method, request.url.path, key, body, make
    )
    response.headers.update(headers)
    return result


async def write(
    gateway: Gateway,
    principal: Principal,
    method: str,
    path: str,
    key: str | None,
    body: object,
    make: Callable[[str], core.AnyCommand],
) -> tuple[Any, dict[str, str]]:
    """Submit a mutating command under the Idempotency-Key rules: the accepted
    reply and the response headers, or a problem for a refusal."""
    headers: dict[str, str] = {}
    if key is None:
        key = generated_key()
        request_id = f"g:{key}"
        headers["Idempotency-Key-Generated"] = "true"
    else:
        if not valid_key(key):
            raise p.ApiProblem(
                400, p.VALIDATION_FAILED, "Idempotency-Key must be 1-128 printable ASCII"
            )
        request_id = keyed_request_id(principal.sub, key)
        canonical = body.model_dump(mode="json") if isinstance(body, pydantic.BaseModel) else body
        await _claim(gateway, request_id, fingerprint(method, path, canonical), key)
    headers["Idempotency-Key"] = key
    outcome = await _ask(gateway, make(request_id))
    if isinstance(outcome, core.Rejected):
        raise p.ApiProblem(
            p.rejection_status(outcome.code),
            outcome.code,
            outcome.message,
            headers={"Idempotency-Key": key},
        )
    return outcome.result, headers


async def place_bet(
    gateway: Gateway, principal: Principal, body: m.BetIn, key: str | None
) -> tuple[m.BetPlacedOut, dict[str, str]]:
    """`POST /v1/bets`, shared by the route and the edge's fast path."""
    require_role(principal, "bettor")
    require_account(principal, body.account_id)
    legs = tuple(
        core.BetLeg(
            market_id=leg.market_id,
            selection_id=leg.selection_id,
            odds=_odds(leg.odds, f"legs[{index}].odds"),
        )
        for index, leg in enumerate(body.legs)
    )
    result, headers = await write(
        gateway,
        principal,
        "POST",
        BETS_PATH,
        key,
        body,
        lambda rid: core.PlaceBet(
            request_id=rid,
            account_id=body.account_id,
            stake_minor=body.stake_minor,
            legs=legs,
            price_change=body.price_change,
        ),
    )
    reply = _expect(result, core.BetReply)
    placed = m.BetPlacedOut(
        bet_id=reply.bet_id,
        status=reply.status,
        odds=format_decimal(reply.odds),
        potential_payout_minor=reply.potential_payout_minor,
        balance_minor=reply.balance_minor,
    )
    return placed, headers


async def _claim(gateway: Gateway, request_id: str, request_fingerprint: str, key: str) -> None:
    assert gateway.claims is not None
    if not gateway.admission.try_enter():
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503, p.OVERLOADED, "the gateway is at capacity", headers={"Retry-After": "1"}
        )
    try:
        async with asyncio.timeout(gateway.settings.request_deadline_ms / 1000):
            await gateway.claims.claim(request_id, request_fingerprint)
    except KeyReused:
        raise p.ApiProblem(
            409,
            p.IDEMPOTENCY_KEY_REUSED,
            f"Idempotency-Key {key!r} was first used for a different request",
        ) from None
    except (ClaimUnavailable, TimeoutError):
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "the idempotency store did not answer in time",
            headers={"Retry-After": "1"},
        ) from None
    finally:
        gateway.admission.leave()


# Views -> response bodies.


def _account_detail(view: core.AccountView) -> m.AccountDetailOut:
    return m.AccountDetailOut(
        account_id=view.account_id,
        balance_minor=view.balance_minor,
        currency=view.currency,
        status="self_excluded" if view.status == "self_excluded" else "active",
        excluded_until_ms=view.excluded_until_ms,
        opened_ms=view.opened_ms,
        limits=[
            m.LimitOut(
                period=limit.period,
                limit_minor=limit.limit_minor,
                pending_limit_minor=limit.pending_limit_minor,
                pending_effective_ms=limit.pending_effective_ms,
            )
            for limit in view.limits
        ],
    )


def _bet_out(view: core.BetView) -> m.BetOut:
    return m.BetOut(
        bet_id=view.bet_id,
        account_id=view.account_id,
        stake_minor=view.stake_minor,
        legs=[
            m.LegOut(
                market_id=leg.market_id,
                selection_id=leg.selection_id,
                odds=format_decimal(leg.odds),
                outcome=leg.outcome,
                dead_heat=leg.dead_heat,
            )
            for leg in view.legs
        ],
        potential_payout_minor=view.potential_payout_minor,
        status=view.status,
        payout_minor=view.payout_minor,
        placed_ms=view.placed_ms,
    )


def _market_out(view: core.MarketView) -> m.MarketOut:
    return m.MarketOut(
        market_id=view.market_id,
        event=view.event_id,
        name=view.name,
        status=view.status,
        in_play=view.in_play,
        bet_delay_s=view.bet_delay_s,
        selections=[
            m.SelectionOut(selection_id=s.selection_id, name=s.name, odds=format_decimal(s.odds))
            for s in view.selections
        ],
        winners=list(view.winners),
    )


def _odds(text: str, where: str) -> int:
    try:
        return parse_decimal(text)
    except InvalidOdds as err:
        raise p.ApiProblem(422, core.RejectionCode.INVALID_ODDS, f"{where}: {err}") from None


def _winners(winners: list[str | m.WinnerIn]) -> tuple[core.Winner, ...]:
    return tuple(
        core.Winner(selection_id=w)
        if isinstance(w, str)
        else core.Winner(selection_id=w.selection_id, dead_heat=w.dead_heat)
        for w in winners
    )


def _expect(result: object, kind: type[Any]) -> Any:
    if not isinstance(result, kind):
        raise p.ApiProblem(503, p.LEDGER_UNAVAILABLE, "the ledger answered unexpectedly")
    return result


AccountId = Annotated[str, Path(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
MarketId = AccountId
BetId = AccountId
After = Annotated[str | None, Query(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def build_routes(app: FastAPI) -> None:
    common: dict[str, Any] = {"responses": PROBLEM_RESPONSES}

    # Accounts and money.

    @app.post("/v1/accounts", status_code=201, response_model=m.AccountOut, **common)
    async def open_account(
        request: Request,
        response: Response,
        body: m.OpenAccountIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_role(caller, "admin")
        settings = _gateway(request).settings
        if body.currency is not None and body.currency != settings.currency:
            raise p.ApiProblem(
                422, p.UNSUPPORTED_CURRENCY, f"this ledger keeps {settings.currency} only"
            )
        account_id = body.account_id or f"acc-{uuid.uuid4().hex[:16]}"
        if body.account_id is None and key is not None:
            # A retry must name the same account: derive it from the key.
            account_id = f"acc-{keyed_request_id(caller.sub, key)[2:18]}"
        result = await _write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.OpenAccount(request_id=rid, account_id=account_id),
        )
        reply = _expect(result, ev.AccountReply)
        return m.AccountOut(account_id=reply.account_id, balance_minor=reply.balance_minor)

    async def _money(
        request: Request,
        response: Response,
        caller: Principal,
        key: str | None,
        account_id: str,
        body: m.AmountIn,
        kind: type[core.Deposit] | type[core.Withdraw],
    ) -> m.TransactionOut:
        result = await _write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: kind(request_id=rid, account_id=account_id, amount_minor=body.amount_minor),
        )
        reply = _expect(result, ev.TransactionReply)
        return m.TransactionOut(
            account_id=reply.account_id,
            balance_minor=reply.balance_minor,
            transaction_id=reply.transaction_id,
        )

    @app.post(
        "/v1/accounts/{account_id}/deposits",
        status_code=201,
        response_model=m.TransactionOut,
        **common,
    )
    async def deposit(
        request: Request,
        response: Response,
        account_id: AccountId,
        body: m.AmountIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_role(caller, "admin", "cashier")
        return await _money(request, response, caller, key, account_id, body, core.Deposit)

    @app.post(
        "/v1/accounts/{account_id}/withdrawals",
        status_code=201,
        response_model=m.TransactionOut,
        **common,
    )
    async def withdraw(
        request: Request,
        response: Response,
        account_id: AccountId,
        body: m.AmountIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_account(caller, account_id, "admin")
        return await _money(request, response, caller, key, account_id, body, core.Withdraw)

    @app.get("/v1/accounts/{account_id}", response_model=m.AccountDetailOut, **common)
    async def get_account(request: Request, account_id: AccountId, caller: Caller) -> Any:
        require_account(caller, account_id, "admin", "cashier", "auditor")
        view = await _read(
            _gateway(request), core.GetAccount(request_id=_query_id(), account_id=account_id)
        )
        return _account_detail(_expect(view, core.AccountView))

    @app.put("/v1/accounts/{account_id}/limits", response_model=m.LimitsOut, **common)
    async def set_limits(
        request: Request,
        response: Response,
        account_id: AccountId,
        body: m.LimitsIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_account(caller, account_id)
        result = await _write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.SetDepositLimits(
                request_id=rid,
                account_id=account_id,
                day_minor=body.day_minor,
                week_minor=body.week_minor,
                month_minor=body.month_minor,
            ),
        )
        reply = _expect(result, ev.LimitsReply)
        return m.LimitsOut(
            account_id=reply.account_id,
            changes=[
                m.LimitChangeOut(
                    period=c.period, limit_minor=c.limit_minor, effective_ms=c.effective_ms
                )
                for c in reply.changes
            ],
        )

    @app.post(
        "/v1/accounts/{account_id}/self-exclusion",
        status_code=201,
        response_model=m.ExclusionOut,
        **common,
    )
    async def self_exclude(
        request: Request,
        response: Response,
        account_id: AccountId,
        body: m.SelfExclusionIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_account(caller, account_id)
        result = await _write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.SelfExclude(request_id=rid, account_id=account_id, days=body.days),
        )
        reply = _expect(result, ev.ExclusionReply)
        return m.ExclusionOut(
            account_id=reply.account_id, excluded_until_ms=reply.excluded_until_ms
        )

    @app.get("/v1/accounts/{account_id}/transactions", response_model=m.HistoryPageOut, **common)
    async def list_transactions(
        request: Request,
        account_id: AccountId,
        caller: Caller,
        after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        limit: Limit = 50,
    ) -> Any:
        require_account(caller, account_id, "admin", "cashier", "auditor")
        page = await _history(
            _gateway(request), HistoryRequest(account_id=account_id, after=after, limit=limit)
        )
        return m.HistoryPageOut(
            entries=[
                m.HistoryEntryOut(
                    entry_id=entry.entry_id,
                    at_ms=entry.at_ms,
                    kind=entry.kind,  # type: ignore[arg-type]
                    amount_minor=entry.amount_minor,
                    balance_minor=entry.balance_minor,
                    reference=entry.reference,
                )
                for entry in page.entries
            ],
            next_after=page.next_after,
            as_of_seq=page.as_of_seq,
        )

    # Bets.

    @app.post(BETS_PATH, status_code=201, response_model=m.BetPlacedOut, **common)
    async def place_bet_route(
        request: Request,
        response: Response,
        body: m.BetIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        # The edge answers this route itself (`EdgeMiddleware._fast_bet`);
        # this route documents it and serves what the fast path passes on.
        placed, headers = await place_bet(_gateway(request), caller, body, key)
        response.headers.update(headers)
        return placed

    @app.get("/v1/bets/{bet_id}", response_model=m.BetOut, **common)
    async def get_bet(request: Request, bet_id: BetId, caller: Caller) -> Any:
        view = _expect(
            await _read(_gateway(request), core.GetBet(request_id=_query_id(), bet_id=bet_id)),
            core.BetView,
        )
        if caller.role not in STAFF_ROLES and not caller.owns(view.account_id):
            # Another bettor's bet: as if it did not exist.
            raise p.ApiProblem(404, "unknown_bet", f"no bet {bet_id!r}")
        return _bet_out(view)

    @app.get("/v1/accounts/{account_id}/bets", response_model=m.BetPageOut, **common)
    async def list_account_bets(
        request: Request,
        account_id: AccountId,
        caller: Caller,
        status: Literal["open", "won", "lost", "void"] | None = None,
        after: After = None,
        limit: Limit = 50,
    ) -> Any:
        require_account(caller, account_id, "admin", "cashier", "auditor", "trader")
        page = _expect(
            await _read(
                _gateway(request),
                core.ListAccountBets(
                    request_id=_query_id(),
                    account_id=account_id,
                    status=status,
                    after=after,
                    limit=limit,
                ),
            ),
            core.BetPage,
        )
        return m.BetPageOut(bets=[_bet_out(b) for b in page.bets], next_after=page.next_after)

    # Markets.

    @app.get("/v1/markets", response_model=m.MarketPageOut, **common)
    async def list_markets(
        request: Request,
        caller: Caller,
        status: Literal["open", "suspended", "closed", "settled", "voided"] | None = None,
        after: After = None,
        limit: Limit = 50,
    ) -> Any:
        page = _expect(
            await _read(
                _gateway(request),
                core.ListMarkets(request_id=_query_id(), status=status, after=after, limit=limit),
            ),
            core.MarketPage,
        )
        return m.MarketPageOut(
            markets=[_market_out(v) for v in page.markets], next_after=page.next_after
        )

    @app.get("/v1/markets/{market_id}", response_model=m.MarketOut, **common)
    async def get_market(request: Request, market_id: MarketId, caller: Caller) -> Any:
        view = await _read(
            _gateway(request), core.GetMarket(request_id=_query_id(), market_id=market_id)
        )
        return _market_out(_expect(view, core.MarketView))

    @app.post("/v1/markets", status_code=201, response_model=m.MarketStatusOut, **common)
    async def create_market(
        request: Request,
        response: Response,
        body: m.MarketIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_role(caller, "trader", "admin")
        market_id = body.market_id or (
            f"mkt-{keyed_request_id(caller.sub, key)[2:18]}"
            if key is not None
            else f"mkt-{uuid.uuid4().hex[:16]}"
        )
        selections = tuple(
            core.SelectionSpec(
                selection_id=s.selection_id,
                name=s.name,
                odds=_odds(s.odds, f"selections[{index}].odds"),
            )
            for index, s in enumerate(body.selections)
        )
        result = await _write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.CreateMarket(
                request_id=rid,
                market_id=market_id,
                event_id=body.event,
                name=body.name,
                selections=selections,
                in_play=body.in_play,
                bet_delay_s=body.bet_delay_s,
            ),
        )
        reply = _expect(result, ev.MarketReply)
        return m.MarketStatusOut(market_id=reply.market_id, status=reply.status)

    async def _market_write(
        request: Request,
        response: Response,
        caller: Caller,
        key: str | None,
        body: object,
        make: Callable[[str], core.AnyCommand],
    ) -> Any:
        require_role(caller, "trader", "admin")
        result = await _write(request, response, caller, key, body, make)
        if isinstance(result, ev.SettlementReply):
            return m.SettlementOut(
                market_id=result.market_id,
                status=result.status,
                bets_affected=result.bets_affected,
                paid_minor=result.paid_minor,
            )
        reply = _expect(result, ev.MarketReply)
        return m.MarketStatusOut(market_id=reply.market_id, status=reply.status)

    @app.post("/v1/markets/{market_id}/prices", response_model=m.MarketStatusOut, **common)
    async def update_prices(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.PricesIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        require_role(caller, "trader", "admin")
        prices = tuple(
            core.SelectionPrice(
                selection_id=price.selection_id, odds=_odds(price.odds, f"prices[{index}].odds")
            )
            for index, price in enumerate(body.prices)
        )
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.UpdatePrices(request_id=rid, market_id=market_id, prices=prices),
        )

    def _status_route(action: str, kind: Callable[..., core.AnyCommand]) -> None:
        async def change_status(
            request: Request,
            response: Response,
            market_id: MarketId,
            caller: Caller,
            key: IdempotencyKey = None,
        ) -> Any:
            return await _market_write(
                request,
                response,
                caller,
                key,
                {},
                lambda rid: kind(request_id=rid, market_id=market_id),
            )

        change_status.__name__ = f"{action}_market"
        app.post(f"/v1/markets/{{market_id}}/{action}", response_model=m.MarketStatusOut, **common)(
            change_status
        )

    _status_route("suspend", core.SuspendMarket)
    _status_route("resume", core.ResumeMarket)
    _status_route("close", core.CloseMarket)

    @app.post("/v1/markets/{market_id}/settle", response_model=m.SettlementOut, **common)
    async def settle_market(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.SettleIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.SettleMarket(
                request_id=rid,
                market_id=market_id,
                winners=_winners(body.winners),
                actor=caller.sub,
            ),
        )

    @app.post("/v1/markets/{market_id}/void", response_model=m.SettlementOut, **common)
    async def void_market(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.VoidIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.VoidMarket(
                request_id=rid, market_id=market_id, actor=caller.sub, reason=body.reason
            ),
        )

    @app.post("/v1/markets/{market_id}/resettle", response_model=m.SettlementOut, **common)
    async def resettle_market(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.ResettleIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.ResettleMarket(
                request_id=rid,
                market_id=market_id,
                winners=_winners(body.winners),
                actor=caller.sub,
                reason=body.reason,
            ),
        )

    @app.websocket("/v1/odds/stream")
    async def odds_stream(websocket: WebSocket) -> None:
        """Live odds; see `services/gateway/odds.py` for the protocol. The
        token comes in the Authorization header or, for browsers, which
        cannot set it on a WebSocket, as `?access_token=`."""
        gateway: Gateway = websocket.app.state.gateway
        authorization = websocket.headers.get("authorization")
        if authorization is None and "access_token" in websocket.query_params:
            authorization = f"Bearer {websocket.query_params['access_token']}"
        try:
            authenticate_scope(gateway, websocket.scope, authorization)
        except p.ApiProblem:
            await websocket.close(code=WS_POLICY_VIOLATION)
            return
        assert gateway.odds is not None
        await websocket.accept()
        await stream_odds(websocket, gateway.odds)

    # Operations.

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        gateway = _gateway(request)
        ready, detail = await _probe_leaders(gateway)
        body = msgspec.json.encode({"ready": ready, "detail": detail})
        return Response(body, status_code=200 if ready else 503, media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        data, content_type = _gateway(request).metrics.exposition()
        return Response(data, media_type=content_type)


async def _history(gateway: Gateway, history_request: HistoryRequest) -> HistoryPage:
    """A page of ledger entries from the partition's history projector."""
    assert gateway.nc is not None
    partition = core.partition_of(history_request.account_id, gateway.settings.partitions)
    if not gateway.admission.try_enter():
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503, p.OVERLOADED, "the gateway is at capacity", headers={"Retry-After": "1"}
        )
    try:
        message = await gateway.nc.request(
            history_subject(partition),
            encode_request(history_request),
            timeout=HISTORY_TIMEOUT_MS / 1000,
        )
        reply = decode_history_reply(message.data)
    except (nats.errors.Error, OSError, msgspec.MsgspecError):
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "the ledger history is not available right now",
            headers={"Retry-After": "1"},
        ) from None
    finally:
        gateway.admission.leave()
    if isinstance(reply, HistoryError):
        raise p.ApiProblem(p.rejection_status(reply.code), reply.code, reply.message)
    return reply


async def stream_odds(websocket: WebSocket, hub: OddsHub) -> None:
    watcher = Watcher()

    async def read_commands() -> None:
        while True:
            parsed = parse_client_message(await websocket.receive_text())
            if isinstance(parsed, str):
                await websocket.send_json(
                    {"type": "error", "code": p.VALIDATION_FAILED, "detail": parsed}
                )
                continue
            action, markets = parsed
            if action == "subscribe":
                if len(watcher.markets | set(markets)) > MAX_MARKETS_PER_CONNECTION:
                    await websocket.send_json(
                        {
                            "type": "error",
                            "code": p.VALIDATION_FAILED,
                            "detail": f"at most {MAX_MARKETS_PER_CONNECTION} markets",
                        }
                    )
                    continue
                for market_id in markets:
                    await hub.watch(watcher, market_id)
            else:
                for market_id in markets:
                    await hub.unwatch(watcher, market_id)
            await websocket.send_json({"type": "subscribed", "markets": sorted(watcher.markets)})

    async def push_odds() -> None:
        while True:
            await watcher.ready.wait()
            for message in watcher.take():
                await websocket.send_json(message)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read_commands())
            group.create_task(push_odds())
    except* (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await hub.unwatch_all(watcher)


async def _probe_leaders(gateway: Gateway) -> tuple[bool, str]:
    """Ready when every partition's leader answers a read in time."""
    if gateway.probe is None:
        return False, "not connected"
    partitions = gateway.settings.partitions
    probes: list[core.AnyQuery] = []
    covered: set[int] = set()
    index = 0
    while len(covered) < partitions:
        account_id = f"readyz-probe-{index}"
        partition = core.partition_of(account_id, partitions)
        if partition not in covered:
            covered.add(partition)
            probes.append(core.GetAccount(request_id=_query_id(), account_id=account_id))
        index += 1
    try:
        async with asyncio.timeout(READINESS_DEADLINE_MS / 1000):
            await asyncio.gather(*(gateway.probe.submit(q) for q in probes))
    except (GaveUp, TimeoutError):
        return False, "no ledger leader answered"
    return True, f"{partitions} partition leader(s) answered"


# Error rendering.


def validation_problem(raw_errors: Sequence[Any], path: str, request_id: str) -> Response:
    errors: list[dict[str, object]] = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in raw_errors[:20]
    ]
    malformed = any(error["type"] == "json_invalid" for error in errors)
    return p.problem_response(
        400 if malformed else 422,
        p.VALIDATION_FAILED,
        "the body is not valid JSON" if malformed else "the request is invalid",
        instance=path[:200],
        request_id=request_id,
        errors=errors,
    )


def _install_error_handlers(app: FastAPI) -> None:
    async def api_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, p.ApiProblem)
        return p.problem_response(
            exc.status,
            exc.code,
            exc.detail,
            instance=request.url.path[:200],
            request_id=_request_id(request),
            headers=exc.headers,
            errors=exc.errors,
        )

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(exc.errors(), request.url.path, _request_id(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {
            404: p.NOT_FOUND,
            405: p.METHOD_NOT_ALLOWED,
            415: p.UNSUPPORTED_MEDIA_TYPE,
        }.get(exc.status_code, p.VALIDATION_FAILED)
        status = exc.status_code if exc.status_code < 500 else 400
        return p.problem_response(
            status,
            code,
            str(exc.detail),
            instance=request.url.path[:200],
            request_id=_request_id(request),
            headers=dict(exc.headers or {}),
        )

    app.add_exception_handler(p.ApiProblem, api_problem)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)


def create_app(
    settings: GatewaySettings, *, on_ready: Callable[[], Awaitable[None]] | None = None
) -> FastAPI:
    gateway = Gateway(settings=settings, metrics=GatewayMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.connect()
        if on_ready is not None:
            await on_ready()
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title=API_TITLE,
        version="1",
        description="The ironbook public API: accounts, money, bets and markets on a "
        "replicated ledger. Money is in integer minor units; odds are decimal strings "
        'like "2.50". Errors are RFC 9457 problem details with a stable `code`.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    _install_error_handlers(app)
    build_routes(app)
    gateway.metrics.learn_routes(app)
    app.add_middleware(EdgeMiddleware, gateway=gateway)
    return app
