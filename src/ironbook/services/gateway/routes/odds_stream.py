"""Live odds over a WebSocket (the protocol is in `services/gateway/odds.py`)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ironbook.services.gateway import problems as p
from ironbook.services.gateway.calls import authenticate_scope
from ironbook.services.gateway.edge import WS_POLICY_VIOLATION
from ironbook.services.gateway.odds import stream_odds
from ironbook.services.gateway.runtime import Gateway

router = APIRouter()


@router.websocket("/v1/odds/stream")
async def odds_stream(websocket: WebSocket) -> None:
    """The token comes in the Authorization header or, for browsers, which
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
    await websocket.accept()
    await stream_odds(websocket, gateway.odds)
