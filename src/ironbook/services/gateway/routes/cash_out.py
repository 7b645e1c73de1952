"""Cash-out: `GET/POST /v1/bets/{bet_id}/cash-out`, quote and accept.

A quote (`GET`) is a read: the bet's value now, less the book's margin, with
a quote id and an expiry; it is refused (409 `cash_out_unavailable`) while a
leg still to run is on a market that takes no bets or is in play with a bet
delay. Accepting (`POST`, with the quote id and amount) is a write under the
Idempotency-Key rules: the ledger pays the quote at most once, and only if it
still stands (409 `quote_changed` / `quote_expired` otherwise: ask again).
`stake_fraction` cashes out part of the stake; the rest of the bet runs on.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from ironbook import core
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal
from ironbook.services.gateway.calls import expect, query_id, read, require_permitted
from ironbook.services.gateway.routes.common import (
    PROBLEM_RESPONSES,
    BetId,
    Caller,
    IdempotencyKey,
    gateway_of,
    write_command,
)

router = APIRouter(responses=PROBLEM_RESPONSES)

StakeFraction = Annotated[str | None, Query(pattern=r"^(1|0\.[0-9]{1,4})$")]


async def _bet(request: Request, caller: Principal, bet_id: str) -> core.BetView:
    """The bet, if the caller may see it (another bettor's bet does not exist)."""
    view: core.BetView = expect(
        await read(gateway_of(request), caller, core.GetBet(request_id=query_id(), bet_id=bet_id)),
        core.BetView,
    )
    if caller.role not in core.STAFF_ROLES and not caller.owns(view.account_id):
        raise p.ApiProblem(404, core.RejectionCode.UNKNOWN_BET, f"no bet {bet_id!r}")
    return view


def _stake_minor(view: core.BetView, stake_fraction: str | None) -> int | None:
    """The part of the bet's stake a fraction names, rounded down; None: all."""
    if stake_fraction is None:
        return None
    stake_minor = int(view.stake_minor * Decimal(stake_fraction))
    if stake_minor < 1:
        raise p.ApiProblem(
            422, core.RejectionCode.INVALID_AMOUNT, "stake_fraction names no stake at all"
        )
    return stake_minor


@router.get("/v1/bets/{bet_id}/cash-out", response_model=m.CashOutQuoteOut)
async def quote_cash_out(
    request: Request, bet_id: BetId, caller: Caller, stake_fraction: StakeFraction = None
) -> Any:
    view = await _bet(request, caller, bet_id)
    quote = expect(
        await read(
            gateway_of(request),
            caller,
            core.QuoteCashOut(
                request_id=query_id(),
                account_id=view.account_id,
                bet_id=bet_id,
                stake_minor=_stake_minor(view, stake_fraction),
            ),
        ),
        core.CashOutQuote,
    )
    return m.CashOutQuoteOut(
        bet_id=quote.bet_id,
        quote_id=quote.quote_id,
        amount_minor=quote.amount_minor,
        stake_minor=quote.stake_minor,
        expires_at=quote.expires_ms,
    )


@router.post("/v1/bets/{bet_id}/cash-out", response_model=m.CashOutOut)
async def cash_out(
    request: Request,
    response: Response,
    bet_id: BetId,
    body: m.CashOutIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.CashOut)
    view = await _bet(request, caller, bet_id)
    stake_minor = _stake_minor(view, body.stake_fraction)
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: core.CashOut(
            request_id=rid,
            account_id=view.account_id,
            bet_id=bet_id,
            quote_id=body.quote_id,
            amount_minor=body.amount_minor,
            stake_minor=stake_minor,
        ),
    )
    reply = expect(result, core.CashOutReply)
    return m.CashOutOut(
        bet_id=reply.bet_id,
        status=reply.status,
        amount_minor=reply.amount_minor,
        stake_minor=reply.stake_minor,
        balance_minor=reply.balance_minor,
    )
