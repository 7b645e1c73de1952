"""Operations: liveness and readiness (at least one partition's leader
answers; `calls.probe_leaders` says why). Not in the OpenAPI document and not
rate limited. Prometheus metrics are served on the ops port, never here
(`server.py`)."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Request, Response

from ironbook.services.gateway.calls import probe_leaders
from ironbook.services.gateway.routes.common import gateway_of

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    ready, detail = await probe_leaders(gateway)
    down = gateway.health.down_among(range(gateway.partitions))
    body = msgspec.json.encode({"ready": ready, "detail": detail, "unavailable_partitions": down})
    return Response(body, status_code=200 if ready else 503, media_type="application/json")
