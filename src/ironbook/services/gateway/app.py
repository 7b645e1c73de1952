"""The gateway application: the public v1 API over the ledger client.

Every request passes the edge first (`edge.py`: request id, IP allow/deny,
per-address token bucket, body size limit, metrics, and a problem response
for anything unexpected), then authentication and the per-principal token
bucket, then admission control just before the ledger is asked (`calls.py`).
This module declares the routes (and so the OpenAPI document), renders views
and errors, and assembles the application. The gateway keeps no state of its
own: the ledger answers every read and write, and a JetStream KV bucket holds
Idempotency-Key claims.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import msgspec
from fastapi import (
    Depends,
    FastAPI,
    Header,
    Path,
    Query,
    Request,
    Response,
    WebSocket,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ironbook import core
from ironbook.core import events as ev
from ironbook.core.odds import format_decimal
from ironbook.core.queries import MAX_PAGE, BetStatusFilter
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import (
    STAFF_ROLES,
    Principal,
)
from ironbook.services.gateway.calls import (
    BETS_PATH,
    authenticate_scope,
    expect,
    history_page,
    parse_odds,
    place_bet,
    probe_leaders,
    query_id,
    read,
    require_account,
    require_role,
    validation_problem,
    write,
)
from ironbook.services.gateway.edge import WS_POLICY_VIOLATION, EdgeMiddleware
from ironbook.services.gateway.history import HistoryRequest
from ironbook.services.gateway.idempotency import keyed_request_id
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import stream_odds
from ironbook.services.gateway.runtime import Gateway
from ironbook.services.gateway.settings import GatewaySettings

API_TITLE = "ironbook"

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


Caller = Annotated[Principal, Depends(authenticate)]


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
        reject_code=view.reject_code or None,
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
        producer=view.producer or None,
        producer_down=view.producer_down,
    )


def _winners(winners: list[str | m.WinnerIn]) -> tuple[core.Winner, ...]:
    return tuple(
        core.Winner(selection_id=w)
        if isinstance(w, str)
        else core.Winner(selection_id=w.selection_id, dead_heat=w.dead_heat)
        for w in winners
    )


AccountId = Annotated[str, Path(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
MarketId = AccountId
BetId = AccountId
After = Annotated[str | None, Query(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def build_routes(app: FastAPI) -> None:  # noqa: C901 — one closure per route: it counts routes, not nesting
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
        reply = expect(result, ev.AccountReply)
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
        reply = expect(result, ev.TransactionReply)
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
        view = await read(
            _gateway(request), core.GetAccount(request_id=query_id(), account_id=account_id)
        )
        return _account_detail(expect(view, core.AccountView))

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
        reply = expect(result, ev.LimitsReply)
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
        reply = expect(result, ev.ExclusionReply)
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
        page = await history_page(
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
        placed, headers = await place_bet(_gateway(request), caller, m.WireBet.of(body), key)
        response.headers.update(headers)
        return m.BetPlacedOut(**msgspec.structs.asdict(placed))

    @app.get("/v1/bets/{bet_id}", response_model=m.BetOut, **common)
    async def get_bet(request: Request, bet_id: BetId, caller: Caller) -> Any:
        view = expect(
            await read(_gateway(request), core.GetBet(request_id=query_id(), bet_id=bet_id)),
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
        status: BetStatusFilter | None = None,
        after: After = None,
        limit: Limit = 50,
    ) -> Any:
        require_account(caller, account_id, "admin", "cashier", "auditor", "trader")
        page = expect(
            await read(
                _gateway(request),
                core.ListAccountBets(
                    request_id=query_id(),
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
        page = expect(
            await read(
                _gateway(request),
                core.ListMarkets(request_id=query_id(), status=status, after=after, limit=limit),
            ),
            core.MarketPage,
        )
        return m.MarketPageOut(
            markets=[_market_out(v) for v in page.markets], next_after=page.next_after
        )

    @app.get("/v1/markets/{market_id}", response_model=m.MarketOut, **common)
    async def get_market(request: Request, market_id: MarketId, caller: Caller) -> Any:
        view = await read(
            _gateway(request), core.GetMarket(request_id=query_id(), market_id=market_id)
        )
        return _market_out(expect(view, core.MarketView))

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
                odds=parse_odds(s.odds, f"selections[{index}].odds"),
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
                producer=body.producer or "",
            ),
        )
        reply = expect(result, ev.MarketReply)
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
        reply = expect(result, ev.MarketReply)
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
                selection_id=price.selection_id,
                odds=parse_odds(price.odds, f"prices[{index}].odds"),
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
                request_id=rid,
                market_id=market_id,
                actor=caller.sub,
                reason=body.reason,
                placed_from_ms=body.placed_from_ms,
                placed_to_ms=body.placed_to_ms,
            ),
        )

    @app.post("/v1/markets/{market_id}/rollback", response_model=m.SettlementOut, **common)
    async def rollback_market(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.RollbackIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        """Undo a settlement or void: every bet of the market goes back to
        open (its payout taken back), the market to `closed`, ready to be
        settled again."""
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            lambda rid: core.RollbackSettlement(
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
        ready, detail = await probe_leaders(gateway)
        body = msgspec.json.encode({"ready": ready, "detail": detail})
        return Response(body, status_code=200 if ready else 503, media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        data, content_type = _gateway(request).metrics.exposition()
        return Response(data, media_type=content_type)


# Error rendering.


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


# Newer FastAPI releases look up OpenTelemetry settings on every request; the
# gateway exports Prometheus metrics instead, so turn that off where it exists.
_NO_FRAMEWORK_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def create_app(
    settings: GatewaySettings,
    *,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    metrics: GatewayMetrics | None = None,
) -> FastAPI:
    """The worker's application; `metrics` defaults to the process-wide
    Prometheus registry (pass one on a private registry to build several)."""
    gateway = Gateway(settings=settings, metrics=metrics or GatewayMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.connect()
        if on_ready is not None:
            await on_ready()
        try:
            yield
        finally:
            await gateway.close()

    app = _GatewayApp(
        title=API_TITLE,
        version="1",
        description="The ironbook public API: accounts, money, bets and markets on a "
        "replicated ledger. Money is in integer minor units; odds are decimal strings "
        'like "2.50". Errors are RFC 9457 problem details with a stable `code`.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        **_NO_FRAMEWORK_TELEMETRY,
    )
    app.state.gateway = gateway
    _install_error_handlers(app)
    build_routes(app)
    gateway.metrics.learn_routes(app)
    app.edge = EdgeMiddleware(functools.partial(FastAPI.__call__, app), gateway=gateway)
    return app


class _GatewayApp(FastAPI):
    """FastAPI behind the edge: every request meets the edge first, outside
    the framework's middleware stack, so that what the edge answers itself
    (refusals, `POST /v1/bets`) pays nothing for that stack."""

    edge: EdgeMiddleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.edge(scope, receive, send)
