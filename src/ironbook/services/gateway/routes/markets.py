"""Markets: list, read, create, reprice, suspend / resume / close, settle,
void, roll back and resettle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response

from ironbook import core
from ironbook.core import events as ev
from ironbook.core.odds import Ladder, PlaceTerms, format_exact, format_price
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal
from ironbook.services.gateway.calls import (
    expect,
    parse_odds,
    query_id,
    read,
    read_or_archived,
    require_permitted,
)
from ironbook.services.gateway.idempotency import keyed_request_id
from ironbook.services.gateway.routes.common import (
    PROBLEM_RESPONSES,
    After,
    Caller,
    IdempotencyKey,
    Limit,
    MarketId,
    gateway_of,
    write_command,
)

router = APIRouter(responses=PROBLEM_RESPONSES)


def _market_out(view: core.MarketView) -> m.MarketOut:
    return m.MarketOut(
        market_id=view.market_id,
        event=view.event_id,
        name=view.name,
        status=view.status,
        in_play=view.in_play,
        bet_delay_s=view.bet_delay_s,
        selections=[
            m.SelectionOut(
                selection_id=s.selection_id,
                name=s.name,
                odds=format_price(s.odds, view.ladder.display),
                price=format_exact(s.odds),
            )
            for s in view.selections
        ],
        winners=list(view.winners),
        producer=view.producer or None,
        producer_down=view.producer_down,
        ladder=m.LadderOut(
            kind=view.ladder.kind,
            display=view.ladder.display,
            tick_hundredths=view.ladder.tick_hundredths,
        ),
        place_terms=None
        if view.place_terms is None
        else m.PlaceTermsOut(
            fraction=f"{view.place_terms.fraction_numerator}/"
            f"{view.place_terms.fraction_denominator}",
            places=view.place_terms.places,
        ),
    )


def _winners(winners: list[str | m.WinnerIn]) -> tuple[core.Winner, ...]:
    return tuple(
        core.Winner(selection_id=w)
        if isinstance(w, str)
        else core.Winner(selection_id=w.selection_id, dead_heat=w.dead_heat, position=w.position)
        for w in winners
    )


async def _market_write(
    request: Request,
    response: Response,
    caller: Principal,
    key: str | None,
    body: object,
    kind: type[core.Command],
    make: Callable[[str], core.AnyCommand],
) -> Any:
    require_permitted(caller, kind)
    result = await write_command(request, response, caller, key, body, make)
    if isinstance(result, ev.SettlementReply):
        return m.SettlementOut(
            market_id=result.market_id,
            status=result.status,
            bets_affected=result.bets_affected,
            paid_minor=result.paid_minor,
        )
    reply = expect(result, ev.MarketReply)
    return m.MarketStatusOut(market_id=reply.market_id, status=reply.status)


@router.get("/v1/markets", response_model=m.MarketPageOut)
async def list_markets(
    request: Request,
    caller: Caller,
    status: Literal["open", "suspended", "closed", "settling", "settled", "voided"] | None = None,
    after: After = None,
    limit: Limit = 50,
) -> Any:
    page = expect(
        await read(
            gateway_of(request),
            caller,
            core.ListMarkets(request_id=query_id(), status=status, after=after, limit=limit),
        ),
        core.MarketPage,
    )
    return m.MarketPageOut(
        markets=[_market_out(v) for v in page.markets], next_after=page.next_after
    )


@router.get("/v1/markets/{market_id}", response_model=m.MarketOut)
async def get_market(request: Request, market_id: MarketId, caller: Caller) -> Any:
    view = await read_or_archived(
        gateway_of(request),
        caller,
        core.GetMarket(request_id=query_id(), market_id=market_id),
        core.MarketView,
    )
    return _market_out(view)


@router.get("/v1/markets/{market_id}/progress", response_model=m.MarketProgressOut)
async def market_progress(request: Request, market_id: MarketId, caller: Caller) -> Any:
    """Each partition's status and result progress for the market (a big
    result is applied slice by slice, in every partition holding bets)."""
    gateway = gateway_of(request)
    try:
        async with asyncio.TaskGroup() as group:
            reads = [
                group.create_task(
                    read(
                        gateway,
                        caller,
                        core.GetMarket(request_id=query_id(), market_id=market_id),
                        partition,
                    )
                )
                for partition in range(gateway.partitions)
            ]
    except* p.ApiProblem as problems:
        raise problems.exceptions[0] from None
    partitions = []
    for partition, task in enumerate(reads):
        view = expect(task.result(), core.MarketView)
        partitions.append(
            m.PartitionProgressOut(
                partition=partition,
                status=view.status,
                done_bets=view.result_done_bets,
                total_bets=view.result_total_bets,
            )
        )
    return m.MarketProgressOut(market_id=market_id, partitions=partitions)


@router.post("/v1/markets", status_code=201, response_model=m.MarketStatusOut)
async def create_market(
    request: Request,
    response: Response,
    body: m.MarketIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.CreateMarket)
    market_id = body.market_id or (
        f"mkt-{keyed_request_id(caller.sub, key)[2:18]}"
        if key is not None
        else f"mkt-{uuid.uuid4().hex[:16]}"
    )
    selections = tuple(
        core.SelectionSpec(
            selection_id=s.selection_id,
            name=s.name,
            odds=parse_odds(s.odds, f"selections[{index}].odds"),
        )
        for index, s in enumerate(body.selections)
    )
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: core.CreateMarket(
            request_id=rid,
            market_id=market_id,
            event_id=body.event,
            name=body.name,
            selections=selections,
            in_play=body.in_play,
            bet_delay_s=body.bet_delay_s,
            producer=body.producer or "",
            ladder=Ladder(
                kind=body.ladder.kind,
                display=body.ladder.display,
                tick_hundredths=body.ladder.tick_hundredths,
            ),
            place_terms=None
            if body.place_terms is None
            else PlaceTerms(
                1, int(body.place_terms.fraction.partition("/")[2]), body.place_terms.places
            ),
            reason=body.reason,
        ),
    )
    reply = expect(result, ev.MarketReply)
    return m.MarketStatusOut(market_id=reply.market_id, status=reply.status)


@router.post("/v1/markets/{market_id}/prices", response_model=m.MarketStatusOut)
async def update_prices(
    request: Request,
    response: Response,
    market_id: MarketId,
    body: m.PricesIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.UpdatePrices)
    prices = tuple(
        core.SelectionPrice(
            selection_id=price.selection_id,
            odds=parse_odds(price.odds, f"prices[{index}].odds"),
        )
        for index, price in enumerate(body.prices)
    )
    return await _market_write(
        request,
        response,
        caller,
        key,
        body,
        core.UpdatePrices,
        lambda rid: core.UpdatePrices(
            request_id=rid, market_id=market_id, prices=prices, reason=body.reason
        ),
    )


def _status_route(
    action: str, kind: type[core.SuspendMarket | core.ResumeMarket | core.CloseMarket]
) -> None:
    async def change_status(
        request: Request,
        response: Response,
        market_id: MarketId,
        body: m.ReasonIn,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> Any:
        return await _market_write(
            request,
            response,
            caller,
            key,
            body,
            kind,
            lambda rid: kind(request_id=rid, market_id=market_id, reason=body.reason),
        )

    change_status.__name__ = f"{action}_market"
    router.post(f"/v1/markets/{{market_id}}/{action}", response_model=m.MarketStatusOut)(
        change_status
    )


_status_route("suspend", core.SuspendMarket)
_status_route("resume", core.ResumeMarket)
_status_route("close", core.CloseMarket)


@router.post("/v1/markets/{market_id}/settle", response_model=m.SettlementOut)
async def settle_market(
    request: Request,
    response: Response,
    market_id: MarketId,
    body: m.SettleIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await _market_write(
        request,
        response,
        caller,
        key,
        body,
        core.SettleMarket,
        lambda rid: core.SettleMarket(
            request_id=rid,
            market_id=market_id,
            winners=_winners(body.winners),
            actor=caller.sub,
            reason=body.reason,
        ),
    )


@router.post("/v1/markets/{market_id}/void", response_model=m.SettlementOut)
async def void_market(
    request: Request,
    response: Response,
    market_id: MarketId,
    body: m.VoidIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await _market_write(
        request,
        response,
        caller,
        key,
        body,
        core.VoidMarket,
        lambda rid: core.VoidMarket(
            request_id=rid,
            market_id=market_id,
            actor=caller.sub,
            reason=body.reason,
            placed_from_ms=body.placed_from_ms,
            placed_to_ms=body.placed_to_ms,
        ),
    )


@router.post("/v1/markets/{market_id}/rollback", response_model=m.SettlementOut)
async def rollback_market(
    request: Request,
    response: Response,
    market_id: MarketId,
    body: m.RollbackIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    """Undo a settlement or void: every bet of the market goes back to
    open (its payout taken back), the market to `closed`, ready to be
    settled again."""
    return await _market_write(
        request,
        response,
        caller,
        key,
        body,
        core.RollbackSettlement,
        lambda rid: core.RollbackSettlement(
            request_id=rid, market_id=market_id, actor=caller.sub, reason=body.reason
        ),
    )


@router.post("/v1/markets/{market_id}/resettle", response_model=m.SettlementOut)
async def resettle_market(
    request: Request,
    response: Response,
    market_id: MarketId,
    body: m.ResettleIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    return await _market_write(
        request,
        response,
        caller,
        key,
        body,
        core.ResettleMarket,
        lambda rid: core.ResettleMarket(
            request_id=rid,
            market_id=market_id,
            winners=_winners(body.winners),
            actor=caller.sub,
            reason=body.reason,
        ),
    )
