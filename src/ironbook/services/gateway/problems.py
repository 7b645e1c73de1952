"""RFC 9457 problem details: every error is `application/problem+json` with a
stable machine-readable `code` (the ledger's rejection codes plus the
gateway's own) and a human `detail`."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from starlette.responses import Response

from ironbook.core import RejectionCode as R
from ironbook.core.queries import INVALID_CURSOR, UNKNOWN_BET

PROBLEM_MEDIA_TYPE = "application/problem+json"

UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
MARKET_BUSY = "market_busy"
VALIDATION_FAILED = "validation_failed"
NOT_FOUND = "not_found"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
PAYLOAD_TOO_LARGE = "payload_too_large"
LEDGER_UNAVAILABLE = "ledger_unavailable"
PARTITION_UNAVAILABLE = "partition_unavailable"
UNSUPPORTED_CURRENCY = "unsupported_currency"
METHOD_NOT_ALLOWED = "method_not_allowed"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
REQUEST_TIMEOUT = "request_timeout"
TOKEN_REVOKED = "token_revoked"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

# The ledger's refusals, by HTTP status; anything else is 422.
_REJECTION_STATUS: dict[str, int] = {
    R.UNKNOWN_ACCOUNT: 404,
    R.UNKNOWN_MARKET: 404,
    UNKNOWN_BET: 404,
    R.ACCOUNT_EXISTS: 409,
    R.MARKET_EXISTS: 409,
    R.INVALID_STATUS_CHANGE: 409,
    R.RESETTLE_WINDOW_CLOSED: 409,
    R.PRICE_CHANGED: 409,
    R.CASH_OUT_UNAVAILABLE: 409,
    R.QUOTE_EXPIRED: 409,
    R.QUOTE_CHANGED: 409,
    INVALID_CURSOR: 400,
    # The ledger's own check of the principal (the gateway checks the same
    # table first, so these mean the two disagreed).
    R.FORBIDDEN: 403,
    R.UNAUTHENTICATED: 403,
}


def rejection_status(code: str) -> int:
    return _REJECTION_STATUS.get(code, 422)


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, object]] | None = None


class ApiProblem(Exception):
    """Raised anywhere in a request; rendered as a problem response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors


_encoder = msgspec.json.Encoder()


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, object]] | None = None,
) -> Response:
    problem = Problem(
        type=f"urn:ironbook:problem:{code}",
        title=_TITLES.get(status, "Error"),
        status=status,
        code=code,
        detail=detail,
        instance=instance,
        request_id=request_id,
        errors=errors,
    )
    return Response(
        _encoder.encode(problem),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )
