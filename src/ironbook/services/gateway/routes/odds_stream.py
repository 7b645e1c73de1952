"""Live odds over a WebSocket (the protocol is in `services/gateway/odds.py`).

The token comes in the `Authorization` header of the upgrade or, for
browsers (which cannot set that header on a WebSocket), as the subprotocol
`ironbook.bearer.<token>` offered next to `ironbook.v1` (the one the server
selects, so the token is never echoed). Never in the query string: URLs end
up in proxy logs and browser history, so `?token=` / `?access_token=` is
refused. The socket is closed (1008) when its token expires or is revoked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import APIRouter, WebSocket

from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal, TokenVerifier
from ironbook.services.gateway.calls import authenticate_scope
from ironbook.services.gateway.odds import WS_POLICY_VIOLATION, stream_odds
from ironbook.services.gateway.runtime import Gateway

router = APIRouter()
security_log = logging.getLogger("ironbook.security")

BEARER_SUBPROTOCOL_PREFIX = "ironbook.bearer."
SUBPROTOCOL = "ironbook.v1"
QUERY_TOKEN_PARAMETERS = ("token", "access_token")


def bearer_of(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(the `Authorization` value to verify, the subprotocol to select)."""
    offered = [
        protocol.strip()
        for value in websocket.headers.getlist("sec-websocket-protocol")
        for protocol in value.split(",")
    ]
    selected = SUBPROTOCOL if SUBPROTOCOL in offered else None
    authorization = websocket.headers.get("authorization")
    if authorization is not None:
        return authorization, selected
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return f"Bearer {protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]}", selected
    return None, selected


async def until_invalid(verifier: TokenVerifier, principal: Principal) -> str:
    """Wait until the principal's token expires or is revoked; which one."""
    try:
        async with asyncio.timeout(max(0.0, principal.expires_s - time.time())):
            await verifier.revocations.wait_revoked(principal.jti)
    except TimeoutError:
        return "token expired"
    return "token revoked"


@router.websocket("/v1/odds/stream")
async def odds_stream(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    client_ip = websocket.scope["state"]["client_ip"]
    if any(name in websocket.query_params for name in QUERY_TOKEN_PARAMETERS):
        gateway.metrics.auth_failures.labels(reason="token_in_query").inc()
        security_log.warning(
            json.dumps({"event": "token_in_query", "ip": client_ip, "path": websocket.url.path})
        )
        await websocket.close(code=WS_POLICY_VIOLATION)
        return
    authorization, subprotocol = bearer_of(websocket)
    try:
        principal = authenticate_scope(gateway, websocket.scope, authorization)
    except p.ApiProblem:
        await websocket.close(code=WS_POLICY_VIOLATION)
        return
    refused = gateway.ws_caps.try_open(client_ip, principal.sub)
    if refused is not None:
        gateway.metrics.shed.labels(reason="websocket_cap").inc()
        await websocket.close(code=WS_POLICY_VIOLATION, reason=refused)
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        await stream_odds(
            websocket, gateway.odds, lambda: until_invalid(gateway.verifier, principal)
        )
    finally:
        gateway.ws_caps.close(client_ip, principal.sub)
