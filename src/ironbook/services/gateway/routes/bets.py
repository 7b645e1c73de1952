"""Bets: place one, read one, list an account's."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from ironbook import core
from ironbook.core.odds import format_decimal, format_exact
from ironbook.core.queries import BetStatusFilter
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.calls import (
    BETS_PATH,
    expect,
    place_bet,
    query_id,
    read,
    read_or_archived,
    require_permitted,
    validation_problem,
)
from ironbook.services.gateway.routes.common import (
    PROBLEM_RESPONSES,
    AccountId,
    After,
    BetId,
    Caller,
    IdempotencyKey,
    Limit,
    gateway_of,
    request_id_of,
)

router = APIRouter(responses=PROBLEM_RESPONSES)

_BET_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BetIn"}}},
    }
}


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
                price=format_exact(leg.odds),
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
        each_way=view.each_way,
        cashed_out_minor=view.cashed_out_minor,
    )


@router.post(BETS_PATH, status_code=201, response_model=m.BetPlacedOut, openapi_extra=_BET_BODY)
async def place_bet_route(
    request: Request, response: Response, caller: Caller, key: IdempotencyKey = None
) -> Any:
    # The edge answers JSON bodies itself (`EdgeMiddleware._fast_bet`); this
    # route documents the endpoint and serves what the edge passes on.
    try:
        bet = m.decode_bet(await request.body())
    except msgspec.MsgspecError as err:
        return validation_problem(m.body_errors(err), request.url.path, request_id_of(request))
    placed, headers = await place_bet(gateway_of(request), caller, bet, key)
    response.headers.update(headers)
    return m.BetPlacedOut(**msgspec.structs.asdict(placed))


@router.get("/v1/bets/{bet_id}", response_model=m.BetOut)
async def get_bet(request: Request, bet_id: BetId, caller: Caller) -> Any:
    view = await read_or_archived(
        gateway_of(request), caller, core.GetBet(request_id=query_id(), bet_id=bet_id), core.BetView
    )
    if caller.role not in core.STAFF_ROLES and not caller.owns(view.account_id):
        # Another bettor's bet: as if it did not exist.
        raise p.ApiProblem(404, "unknown_bet", f"no bet {bet_id!r}")
    return _bet_out(view)


@router.get("/v1/accounts/{account_id}/bets", response_model=m.BetPageOut)
async def list_account_bets(
    request: Request,
    account_id: AccountId,
    caller: Caller,
    status: BetStatusFilter | None = None,
    after: After = None,
    limit: Limit = 50,
) -> Any:
    require_permitted(caller, core.ListAccountBets, account_id)
    page = expect(
        await read(
            gateway_of(request),
            caller,
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
