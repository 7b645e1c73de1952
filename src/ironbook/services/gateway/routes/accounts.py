"""Accounts and money: open, deposit, withdraw, read, limits, self-exclusion,
transaction history."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from ironbook import core
from ironbook.core import events as ev
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import Principal
from ironbook.services.gateway.calls import (
    expect,
    history_page,
    query_id,
    read,
    require_permitted,
    require_staff_reason,
)
from ironbook.services.gateway.history import HistoryRequest
from ironbook.services.gateway.idempotency import keyed_request_id
from ironbook.services.gateway.routes.common import (
    PROBLEM_RESPONSES,
    AccountId,
    Caller,
    IdempotencyKey,
    Limit,
    gateway_of,
    write_command,
)

router = APIRouter(responses=PROBLEM_RESPONSES)


def _account_detail(view: core.AccountView) -> m.AccountDetailOut:
    return m.AccountDetailOut(
        account_id=view.account_id,
        balance_minor=view.balance_minor,
        currency=view.currency,
        status="self_excluded" if view.status == "self_excluded" else "active",
        excluded_until_ms=view.excluded_until_ms,
        opened_ms=view.opened_ms,
        limits=[
            m.LimitOut(
                period=limit.period,
                limit_minor=limit.limit_minor,
                pending_limit_minor=limit.pending_limit_minor,
                pending_effective_ms=limit.pending_effective_ms,
            )
            for limit in view.limits
        ],
    )


@router.post("/v1/accounts", status_code=201, response_model=m.AccountOut)
async def open_account(
    request: Request,
    response: Response,
    body: m.OpenAccountIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.OpenAccount)
    currency = gateway_of(request).settings.currency
    if body.currency is not None and body.currency != currency:
        raise p.ApiProblem(422, p.UNSUPPORTED_CURRENCY, f"this ledger keeps {currency} only")
    account_id = body.account_id or f"acc-{uuid.uuid4().hex[:16]}"
    if body.account_id is None and key is not None:
        # A retry must name the same account: derive it from the key.
        account_id = f"acc-{keyed_request_id(caller.sub, key)[2:18]}"
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: core.OpenAccount(request_id=rid, account_id=account_id),
    )
    reply = expect(result, ev.AccountReply)
    return m.AccountOut(account_id=reply.account_id, balance_minor=reply.balance_minor)


async def _money(
    request: Request,
    response: Response,
    caller: Principal,
    key: str | None,
    account_id: str,
    body: m.DepositIn | m.WithdrawalIn,
    kind: type[core.Deposit] | type[core.Withdraw],
) -> m.TransactionOut:
    require_permitted(caller, kind, account_id)
    reason = require_staff_reason(caller, body.reason, f"a {kind.__name__.lower()}")
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: kind(
            request_id=rid, account_id=account_id, amount_minor=body.amount_minor, reason=reason
        ),
    )
    reply = expect(result, ev.TransactionReply)
    return m.TransactionOut(
        account_id=reply.account_id,
        balance_minor=reply.balance_minor,
        transaction_id=reply.transaction_id,
    )


@router.post("/v1/accounts/{account_id}/deposits", status_code=201, response_model=m.TransactionOut)
async def deposit(
    request: Request,
    response: Response,
    account_id: AccountId,
    body: m.DepositIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    """Staff only, with a `reason`, kept in the ledger with the caller's subject."""
    return await _money(request, response, caller, key, account_id, body, core.Deposit)


@router.post(
    "/v1/accounts/{account_id}/withdrawals", status_code=201, response_model=m.TransactionOut
)
async def withdraw(
    request: Request,
    response: Response,
    account_id: AccountId,
    body: m.WithdrawalIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    """The account's bettor, or an admin with a `reason`."""
    return await _money(request, response, caller, key, account_id, body, core.Withdraw)


@router.get("/v1/accounts/{account_id}", response_model=m.AccountDetailOut)
async def get_account(request: Request, account_id: AccountId, caller: Caller) -> Any:
    require_permitted(caller, core.GetAccount, account_id)
    view = await read(
        gateway_of(request), caller, core.GetAccount(request_id=query_id(), account_id=account_id)
    )
    return _account_detail(expect(view, core.AccountView))


@router.put("/v1/accounts/{account_id}/limits", response_model=m.LimitsOut)
async def set_limits(
    request: Request,
    response: Response,
    account_id: AccountId,
    body: m.LimitsIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.SetDepositLimits, account_id)
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: core.SetDepositLimits(
            request_id=rid,
            account_id=account_id,
            day_minor=body.day_minor,
            week_minor=body.week_minor,
            month_minor=body.month_minor,
        ),
    )
    reply = expect(result, ev.LimitsReply)
    return m.LimitsOut(
        account_id=reply.account_id,
        changes=[
            m.LimitChangeOut(
                period=c.period, limit_minor=c.limit_minor, effective_ms=c.effective_ms
            )
            for c in reply.changes
        ],
    )


@router.post(
    "/v1/accounts/{account_id}/self-exclusion", status_code=201, response_model=m.ExclusionOut
)
async def self_exclude(
    request: Request,
    response: Response,
    account_id: AccountId,
    body: m.SelfExclusionIn,
    caller: Caller,
    key: IdempotencyKey = None,
) -> Any:
    require_permitted(caller, core.SelfExclude, account_id)
    result = await write_command(
        request,
        response,
        caller,
        key,
        body,
        lambda rid: core.SelfExclude(request_id=rid, account_id=account_id, days=body.days),
    )
    reply = expect(result, ev.ExclusionReply)
    return m.ExclusionOut(account_id=reply.account_id, excluded_until_ms=reply.excluded_until_ms)


@router.get("/v1/accounts/{account_id}/transactions", response_model=m.HistoryPageOut)
async def list_transactions(
    request: Request,
    account_id: AccountId,
    caller: Caller,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Limit = 50,
) -> Any:
    # The history of an account is for whoever may read the account.
    require_permitted(caller, core.GetAccount, account_id)
    page = await history_page(
        gateway_of(request), HistoryRequest(account_id=account_id, after=after, limit=limit)
    )
    return m.HistoryPageOut(
        entries=[
            m.HistoryEntryOut(
                entry_id=entry.entry_id,
                at_ms=entry.at_ms,
                kind=entry.kind,  # type: ignore[arg-type]
                amount_minor=entry.amount_minor,
                balance_minor=entry.balance_minor,
                reference=entry.reference,
            )
            for entry in page.entries
        ],
        next_after=page.next_after,
        as_of_seq=page.as_of_seq,
    )
