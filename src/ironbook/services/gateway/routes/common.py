"""What every router shares: the documented problem responses, the caller
and Idempotency-Key parameters, path and query types, and the write helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request, Response

from ironbook import core
from ironbook.core.queries import MAX_PAGE
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal
from ironbook.services.gateway.calls import authenticate_scope, write
from ironbook.services.gateway.runtime import Gateway

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


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def authenticate(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return authenticate_scope(gateway_of(request), request.scope, authorization)


Caller = Annotated[Principal, Depends(authenticate)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the call safe to retry: the same key returns the first response. "
        "1-128 printable ASCII characters. Without it the gateway makes one.",
    ),
]

AccountId = Annotated[str, Path(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
MarketId = AccountId
BetId = AccountId
After = Annotated[str | None, Query(min_length=1, max_length=m.MAX_ID, pattern=r"^[!-~]+$")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


async def write_command(
    request: Request,
    response: Response,
    principal: Principal,
    key: str | None,
    body: object,
    make: Callable[[str], core.AnyCommand],
) -> Any:
    """Submit the command `make(request_id)` under the Idempotency-Key rules;
    its reply, with the key's headers set on `response`."""
    result, headers = await write(
        gateway_of(request), principal, request.method, request.url.path, key, body, make
    )
    response.headers.update(headers)
    return result
