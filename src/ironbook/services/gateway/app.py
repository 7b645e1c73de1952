"""The gateway application: the public v1 API over the ledger.

Every request passes the edge first (`edge.py`: request id, IP allow/deny,
per-address token bucket, body size limit, metrics, and a problem response
for anything unexpected), then authentication and the per-principal token
bucket, then admission control just before the ledger is asked (`calls.py`).
The routes live in `routes/`, one router per resource; this module renders
errors and assembles the application around a `Gateway` the composition root
built complete. The gateway keeps no state of its own: the ledger answers
every read and write, and a JetStream KV bucket holds Idempotency-Key claims.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.calls import validation_problem
from ironbook.services.gateway.edge import EdgeMiddleware
from ironbook.services.gateway.routes import ROUTERS
from ironbook.services.gateway.routes.common import request_id_of
from ironbook.services.gateway.runtime import Gateway

API_TITLE = "ironbook"
API_DESCRIPTION = (
    "The ironbook public API: accounts, money, bets and markets on a "
    "replicated ledger. Money is in integer minor units; odds are exact prices in any "
    'notation ("13/8", "2.50", "+150"). Errors are RFC 9457 problem details with a '
    "stable `code`."
)
MSGSPEC_BODIES = (m.BetIn,)
"""Request bodies decoded by msgspec rather than declared to FastAPI; their
schemas are added to the OpenAPI document's components."""


# Error rendering.


def _install_error_handlers(app: FastAPI) -> None:
    async def api_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, p.ApiProblem)
        return p.problem_response(
            exc.status,
            exc.code,
            exc.detail,
            instance=request.url.path[:200],
            request_id=request_id_of(request),
            headers=exc.headers,
            errors=exc.errors,
        )

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(exc.errors(), request.url.path, request_id_of(request))

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
            request_id=request_id_of(request),
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


def create_app(gateway: Gateway) -> FastAPI:
    """The worker's application around its complete `gateway`."""
    app = _GatewayApp(
        title=API_TITLE,
        version="1",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        **_NO_FRAMEWORK_TELEMETRY,
    )
    app.state.gateway = gateway
    _install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    gateway.metrics.learn_routes(app)
    app.edge = EdgeMiddleware(functools.partial(FastAPI.__call__, app), gateway=gateway)
    return app


class _GatewayApp(FastAPI):
    """FastAPI behind the edge: every request meets the edge first, outside
    the framework's middleware stack, so that what the edge answers itself
    (refusals, `POST /v1/bets`) pays nothing for that stack."""

    edge: EdgeMiddleware

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(m.openapi_components(*MSGSPEC_BODIES))
        return schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.edge(scope, receive, send)
