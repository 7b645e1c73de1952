"""The audit trail: a bet's receipt, and the significant-event log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from ironbook import core
from ironbook.adapters.audit.trail import (
    AuditUnavailable,
    EventQuery,
    NotYetCheckpointed,
    parse_time_ms,
)
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal
from ironbook.services.gateway.calls import (
    history_page,
    query_id,
    read_or_archived,
)
from ironbook.services.gateway.history import ENTRY_INDEX_BITS, MAX_PAGE, HistoryRequest
from ironbook.services.gateway.routes.common import (
    PROBLEM_RESPONSES,
    BetId,
    Caller,
    Limit,
    gateway_of,
)
from ironbook.services.gateway.runtime import Gateway

router = APIRouter(responses=PROBLEM_RESPONSES)

MAX_HISTORY_PAGES = 50
"""A bet is looked for in at most this many pages of its account's history."""

_RETRY_SOON = {"Retry-After": "1"}


def _require_auditor(caller: Principal) -> None:
    if caller.role != "auditor":
        raise p.ApiProblem(403, p.FORBIDDEN, "the audit trail is for the auditor role")


async def _bet_seq(gateway: Gateway, bet: core.BetView) -> int:
    """The log sequence of the entry that placed `bet`, from its account's
    history (which trails the ledger by a moment)."""
    after: int | None = None
    for _ in range(MAX_HISTORY_PAGES):
        try:
            page = await history_page(
                gateway, HistoryRequest(account_id=bet.account_id, after=after, limit=MAX_PAGE)
            )
        except p.ApiProblem as problem:
            if problem.code != "unknown_account":
                raise
            break  # The account is newer than the history projection.
        for entry in page.entries:
            if entry.kind == "bet" and entry.reference == bet.bet_id:
                return entry.entry_id >> ENTRY_INDEX_BITS
        if page.next_after is None:
            break
        after = page.next_after
    raise p.ApiProblem(
        409,
        "not_yet_checkpointed",
        f"bet {bet.bet_id!r} is not in its account's history yet; try again in a second",
        headers=_RETRY_SOON,
    )


@router.get(
    "/v1/bets/{bet_id}/receipt",
    response_model=m.ReceiptOut,
    responses={409: {"description": "not yet covered by a signed checkpoint: retry"}},
)
async def bet_receipt(request: Request, bet_id: BetId, caller: Caller) -> Response:
    """The bet's log entry with an inclusion proof up to a signed checkpoint:
    verify it offline with `ironbook audit verify-receipt FILE --pubkey KEY`.
    A bettor gets receipts of their own bets; the auditor of any."""
    if caller.role not in ("bettor", "auditor"):
        raise p.ApiProblem(403, p.FORBIDDEN, "receipts are for the bettor and the auditor")
    gateway = gateway_of(request)
    bet = await read_or_archived(
        gateway, caller, core.GetBet(request_id=query_id(), bet_id=bet_id), core.BetView
    )
    if caller.role == "bettor" and not caller.owns(bet.account_id):
        raise p.ApiProblem(404, "unknown_bet", f"no bet {bet_id!r}")
    seq = await _bet_seq(gateway, bet)
    partition = core.partition_of(bet.account_id, gateway.partitions)
    try:
        body = await gateway.audit.receipt(partition, seq)
    except NotYetCheckpointed as err:
        raise p.ApiProblem(409, "not_yet_checkpointed", str(err), headers=_RETRY_SOON) from None
    except AuditUnavailable as err:
        raise p.ApiProblem(503, p.LEDGER_UNAVAILABLE, str(err), headers=_RETRY_SOON) from None
    return Response(body, media_type="application/json")


def _time_ms(value: str | None, name: str) -> int | None:
    """Unix milliseconds, or an ISO 8601 date or date-time (UTC unless it says)."""
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except ValueError:
        raise p.ApiProblem(
            422, p.VALIDATION_FAILED, f"{name}: not Unix ms or an ISO 8601 date-time"
        ) from None


TimeParam = Annotated[str | None, Query(max_length=40)]
KindParam = Annotated[str | None, Query(min_length=1, max_length=40, pattern=r"^[a-z_]+$")]
ActorParam = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/v1/audit/events", response_model=m.SignificantEventPageOut)
async def significant_events(
    request: Request,
    caller: Caller,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: TimeParam = None,
    kind: KindParam = None,
    actor: ActorParam = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Limit = 50,
) -> Any:
    """Significant events (staff actions with actor and reason, leader changes,
    authentication failures, alerts, ...) in log order, for the auditor:
    `from <= at < to` (Unix ms or ISO 8601), by `kind` and `actor`, paged by
    `after`."""
    _require_auditor(caller)
    query = EventQuery(
        from_ms=_time_ms(from_, "from"),
        to_ms=_time_ms(to, "to"),
        kind=kind,
        actor=actor,
        after=after,
        limit=limit,
    )
    try:
        page = await gateway_of(request).audit.events(query)
    except AuditUnavailable as err:
        raise p.ApiProblem(503, p.LEDGER_UNAVAILABLE, str(err), headers=_RETRY_SOON) from None
    return m.SignificantEventPageOut(
        events=[
            m.SignificantEventOut(
                seq=seq,
                kind=event.kind,
                actor=event.actor,
                reason=event.reason,
                target=event.target,
                detail=event.detail,
                at_ms=event.at_ms,
                source=event.source,
            )
            for seq, event in page.events
        ],
        next_after=page.next_after,
    )
