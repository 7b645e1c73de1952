"""Administration: revoking a token (by its `jti`) on every gateway worker."""

from __future__ import annotations

from typing import Annotated

import nats.errors
from fastapi import APIRouter, Path, Request

from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.calls import require_role
from ironbook.services.gateway.revocation import JTI_PATTERN
from ironbook.services.gateway.routes.common import PROBLEM_RESPONSES, Caller, gateway_of

router = APIRouter(responses=PROBLEM_RESPONSES)

TokenId = Annotated[str, Path(pattern=JTI_PATTERN.pattern)]


@router.post("/v1/admin/tokens/{jti}/revoke", response_model=m.TokenRevokedOut)
async def revoke_token(request: Request, jti: TokenId, principal: Caller) -> m.TokenRevokedOut:
    """Revoke the token whose `jti` this is: every gateway worker refuses it
    within a second (401) and closes its WebSockets. Idempotent."""
    require_role(principal, "admin")
    gateway = gateway_of(request)
    try:
        revoked_at_ms = await gateway.revoker.revoke(jti, by=principal.sub)
    except (nats.errors.Error, OSError, TimeoutError):
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "the revocation store did not answer; retry",
            headers={"Retry-After": "1"},
        ) from None
    gateway.verifier.revocations.add(jti, revoked_at_ms / 1000)
    return m.TokenRevokedOut(jti=jti, revoked_at_ms=revoked_at_ms)
