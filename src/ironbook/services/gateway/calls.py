"""What a request does once past the edge, independent of the web framework:
authenticate, check roles, ask the ledger under admission control and the
deadline, apply the Idempotency-Key rules, read history, probe readiness.
Used by the routes (`app.py`) and by the edge's fast path (`edge.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import msgspec
import pydantic
from fastapi import Response
from starlette.types import Scope

from ironbook import core
from ironbook.client import BadRequest, GaveUp
from ironbook.core.odds import InvalidOdds, Price, format_decimal
from ironbook.core.odds import parse_odds as parse_price
from ironbook.core.queries import UNKNOWN_BET
from ironbook.replication.client import routed_partitions
from ironbook.services.gateway import models as m
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.auth import (
    AuthError,
    Principal,
)
from ironbook.services.gateway.history import (
    ArchivedRequest,
    ArchivedView,
    HistoryError,
    HistoryPage,
    HistoryRequest,
    HistoryUnavailable,
)
from ironbook.services.gateway.idempotency import (
    ClaimUnavailable,
    KeyReused,
    fingerprint,
    generated_key,
    keyed_request_id,
    valid_key,
)
from ironbook.services.gateway.runtime import (
    READINESS_CACHE_MS,
    READINESS_DEADLINE_MS,
    Gateway,
)
from ironbook.services.gateway.traffic import retry_after_header

log = logging.getLogger("ironbook.gateway")
T = TypeVar("T")
security_log = logging.getLogger("ironbook.security")

BETS_PATH = "/v1/bets"


def authenticate_scope(gateway: Gateway, scope: Scope, authorization: str | None) -> Principal:
    """The caller, or 401 (logged as a security event); then the caller's
    token bucket, or 429."""
    assert gateway.verifier is not None
    try:
        principal = gateway.verifier.verify(authorization)
    except AuthError as err:
        gateway.metrics.auth_failures.labels(reason=err.reason.split(":")[0]).inc()
        security_log.warning(
            json.dumps(
                {
                    "event": "auth_failed",
                    "reason": err.reason,
                    "ip": scope["state"].get("client_ip"),
                    "method": scope.get("method", "WEBSOCKET"),
                    "path": scope["path"][:200],
                    "request_id": scope["state"].get("request_id"),
                }
            )
        )
        gateway.audit.note(
            "auth_failure",
            actor=f"ip:{scope['state'].get('client_ip')}",
            reason=err.reason,
            target=scope["path"][:200],
            detail=scope.get("method", "WEBSOCKET"),
        )
        raise p.ApiProblem(
            401,
            p.UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="ironbook"'},
        ) from None
    wait_s = gateway.principal_buckets.take(principal.sub)
    if wait_s > 0:
        gateway.metrics.shed.labels(reason="rate_limited_principal").inc()
        raise p.ApiProblem(
            429,
            p.RATE_LIMITED,
            "too many requests for this principal",
            headers={"Retry-After": retry_after_header(wait_s)},
        )
    return principal


def require_role(principal: Principal, *roles: str) -> None:
    """For what is not a ledger command (token revocation, the audit trail)."""
    if principal.role not in roles:
        raise p.ApiProblem(
            403, p.FORBIDDEN, f"role {principal.role!r} may not do this (needs {'/'.join(roles)})"
        )


def require_permitted(
    principal: Principal, kind: type[core.Command], account_id: str | None = None
) -> None:
    """403 unless the caller may issue a `kind` naming `account_id`: the
    ledger's own permission table (`core.PERMITTED`), checked here before
    anything is sent, and again by the ledger."""
    refusal = core.permission_refusal(principal.ledger, kind, account_id)
    if refusal is not None:
        raise p.ApiProblem(403, p.FORBIDDEN, refusal[1])


def require_staff_reason(principal: Principal, reason: str | None, what: str) -> str:
    """The reason staff must give for `what`; 422 without one. A bettor
    acting on its own account gives none."""
    if principal.role == "bettor":
        return reason or ""
    if reason is None or not reason.strip():
        raise p.ApiProblem(
            422,
            p.VALIDATION_FAILED,
            f"{what} by staff needs a reason",
            errors=[{"loc": ["body", "reason"], "msg": "required", "type": "missing"}],
        )
    return reason


async def ask(
    gateway: Gateway, command: core.AnyCommand | core.AnyQuery, partition: int | None = None
) -> core.Outcome:
    """One ledger round trip under admission control and the deadline; to
    `partition` if given, else where the command is routed."""
    targets = _targets(gateway, command, partition)
    down = gateway.health.down_among(targets)
    if down:
        gateway.metrics.shed.labels(reason="partition_unavailable").inc()
        raise p.ApiProblem(
            503,
            p.PARTITION_UNAVAILABLE,
            f"ledger partition {', '.join(map(str, down))} has no leader answering right now "
            "(the other partitions are serving); nothing was done: retry shortly",
            headers={"Retry-After": "1"},
        )
    markets = [leg.market_id for leg in command.legs] if isinstance(command, core.PlaceBet) else []
    busy = gateway.market_admission.try_enter(markets) if markets else None
    if busy is not None:
        gateway.metrics.shed.labels(reason="market_busy").inc()
        raise p.ApiProblem(
            503,
            p.MARKET_BUSY,
            f"market {busy} has as many bets in flight as one market may hold; bets on other "
            "markets are still taken; nothing was done: retry shortly",
            headers={"Retry-After": "1"},
        )
    if not gateway.admission.try_enter():
        if markets:
            gateway.market_admission.leave(markets)
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503,
            p.OVERLOADED,
            "the gateway is at capacity; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        # The deadline is the ledger client's own (`ClientConfig.deadline_ms`,
        # set to `request_deadline_ms`): it gives up with `GaveUp` once no
        # attempt can finish in time, so no timer per request is needed here.
        if partition is not None:
            outcome = await gateway.ledger.submit_to(partition, command)
        else:
            outcome = await gateway.ledger.submit(command)
    except GaveUp:
        if len(targets) == 1:
            gateway.health.silent(targets[0], time.monotonic())
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "no ledger answer in time; a write may or may not have happened: "
            "retry with the same Idempotency-Key to find out",
            headers={"Retry-After": "1"},
        ) from None
    except BadRequest as err:
        raise p.ApiProblem(400, p.VALIDATION_FAILED, f"the ledger refused: {err}") from None
    finally:
        gateway.admission.leave()
        if markets:
            gateway.market_admission.leave(markets)
    for target in targets:
        gateway.health.answered(target)
    return outcome


def _targets(
    gateway: Gateway, command: core.AnyCommand | core.AnyQuery, partition: int | None
) -> list[int]:
    """The partitions a command goes to (none known: the ledger client
    refuses it itself)."""
    if partition is not None:
        return [partition]
    try:
        return routed_partitions(command, gateway.partitions)
    except (ValueError, TypeError):
        return []


async def read(
    gateway: Gateway, caller: Principal, query: core.AnyQuery, partition: int | None = None
) -> Any:
    """The view `query` reads, asked as `caller`."""
    outcome = await ask(gateway, core.issued(query, caller.ledger), partition)
    if isinstance(outcome, core.Rejected):
        raise p.ApiProblem(p.rejection_status(outcome.code), outcome.code, outcome.message)
    result = outcome.result
    if isinstance(result, core.ReadRefusal):
        raise p.ApiProblem(p.rejection_status(result.code), result.code, result.message)
    return result


def query_id() -> str:
    return f"q:{os.urandom(16).hex()}"


async def write(
    gateway: Gateway,
    principal: Principal,
    method: str,
    path: str,
    key: str | None,
    body: object,
    make: Callable[[str], core.AnyCommand],
) -> tuple[Any, dict[str, str]]:
    """Submit a mutating command under the Idempotency-Key rules: the accepted
    reply and the response headers, or a problem for a refusal."""
    headers: dict[str, str] = {}
    if key is None:
        key = generated_key()
        request_id = f"g:{key}"
        headers["Idempotency-Key-Generated"] = "true"
    else:
        if not valid_key(key):
            raise p.ApiProblem(
                400, p.VALIDATION_FAILED, "Idempotency-Key must be 1-128 printable ASCII"
            )
        request_id = keyed_request_id(principal.sub, key)
        canonical = _canonical(body)
        await claim(gateway, request_id, fingerprint(method, path, canonical), key)
    headers["Idempotency-Key"] = key
    command = core.issued(make(request_id), principal.ledger)
    outcome = await ask(gateway, command)
    # The line carries the HTTP request id (`ironbook.logs`); the ledger
    # keeps the command's own request id with the entry it appends.
    log.debug(
        "%s %s: %s %s -> %s",
        method,
        path,
        type(command).__name__,
        request_id,
        outcome.code if isinstance(outcome, core.Rejected) else type(outcome.result).__name__,
    )
    if isinstance(outcome, core.Rejected):
        raise p.ApiProblem(
            p.rejection_status(outcome.code),
            outcome.code,
            outcome.message,
            headers={"Idempotency-Key": key},
        )
    return outcome.result, headers


def _canonical(body: object) -> object:
    """The body as plain JSON values, for its fingerprint: the same whichever
    model (pydantic at the routes, msgspec on the hot path) parsed it."""
    if isinstance(body, pydantic.BaseModel):
        return body.model_dump(mode="json")
    if isinstance(body, msgspec.Struct):
        return msgspec.to_builtins(body)
    return body


async def place_bet(
    gateway: Gateway, principal: Principal, body: m.BetIn, key: str | None
) -> tuple[m.WireBetPlaced, dict[str, str]]:
    """`POST /v1/bets`, shared by the route and the edge's fast path."""
    require_permitted(principal, core.PlaceBet, body.account_id)
    legs = tuple(
        core.BetLeg(
            market_id=leg.market_id,
            selection_id=leg.selection_id,
            odds=parse_odds(leg.odds, f"legs[{index}].odds"),
        )
        for index, leg in enumerate(body.legs)
    )
    result, headers = await write(
        gateway,
        principal,
        "POST",
        BETS_PATH,
        key,
        body,
        lambda rid: core.PlaceBet(
            request_id=rid,
            account_id=body.account_id,
            stake_minor=body.stake_minor,
            legs=legs,
            price_change=body.price_change,
            each_way=body.each_way,
            principal=principal.ledger,
        ),
    )
    reply = expect(result, core.BetReply)
    placed = m.WireBetPlaced(
        bet_id=reply.bet_id,
        status=reply.status,
        odds=format_decimal(reply.odds),
        potential_payout_minor=reply.potential_payout_minor,
        balance_minor=reply.balance_minor,
    )
    return placed, headers


async def claim(gateway: Gateway, request_id: str, request_fingerprint: str, key: str) -> None:
    if not gateway.admission.try_enter():
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503, p.OVERLOADED, "the gateway is at capacity", headers={"Retry-After": "1"}
        )
    try:
        async with asyncio.timeout(gateway.settings.request_deadline_ms / 1000):
            await gateway.claims.claim(request_id, request_fingerprint)
    except KeyReused:
        raise p.ApiProblem(
            409,
            p.IDEMPOTENCY_KEY_REUSED,
            f"Idempotency-Key {key!r} was first used for a different request",
        ) from None
    except (ClaimUnavailable, TimeoutError):
        raise p.ApiProblem(
            503,
            p.LEDGER_UNAVAILABLE,
            "the idempotency store did not answer in time",
            headers={"Retry-After": "1"},
        ) from None
    finally:
        gateway.admission.leave()


def parse_odds(text: str, where: str) -> Price:
    """A price in any notation ('2.50', '13/8', '+150'), kept exact."""
    try:
        return parse_price(text)
    except InvalidOdds as err:
        raise p.ApiProblem(422, core.RejectionCode.INVALID_ODDS, f"{where}: {err}") from None


def expect(result: object, kind: type[Any]) -> Any:
    if not isinstance(result, kind):
        raise p.ApiProblem(503, p.LEDGER_UNAVAILABLE, "the ledger answered unexpectedly")
    return result


async def history_page(gateway: Gateway, history_request: HistoryRequest) -> HistoryPage:
    """A page of ledger entries from the partition's history projector."""
    partition = core.partition_of(history_request.account_id, gateway.partitions)
    if not gateway.admission.try_enter():
        gateway.metrics.shed.labels(reason="overloaded").inc()
        raise p.ApiProblem(
            503, p.OVERLOADED, "the gateway is at capacity", headers={"Retry-After": "1"}
        )
    try:
        reply = await gateway.history.page(partition, history_request)
    except HistoryUnavailable:
        raise _history_unavailable() from None
    finally:
        gateway.admission.leave()
    if isinstance(reply, HistoryError):
        raise p.ApiProblem(p.rejection_status(reply.code), reply.code, reply.message)
    return reply


def _history_unavailable() -> p.ApiProblem:
    return p.ApiProblem(
        503,
        p.LEDGER_UNAVAILABLE,
        "the ledger history is not available right now",
        headers={"Retry-After": "1"},
    )


async def read_or_archived(
    gateway: Gateway,
    caller: Principal,
    query: core.GetBet | core.GetMarket,
    kind: type[T],
) -> T:
    """The view `query` reads from the ledger or, for a bet or market the
    ledger has archived (it answers unknown), the final view the partition's
    history projector keeps."""
    try:
        return cast(T, expect(await read(gateway, caller, query), kind))
    except p.ApiProblem as unknown:
        if unknown.code not in (UNKNOWN_BET, core.RejectionCode.UNKNOWN_MARKET):
            raise
        if isinstance(query, core.GetBet):
            request = ArchivedRequest(bet_id=query.bet_id)
        else:
            request = ArchivedRequest(market_id=query.market_id)
        partition = core.query_partition(query, gateway.partitions)
        try:
            reply = await gateway.history.archived(partition, request)
        except HistoryUnavailable:
            # Unknown to the ledger, and the archive cannot say: not a 404.
            raise _history_unavailable() from None
        if isinstance(reply, ArchivedView) and isinstance(reply.view, kind):
            return reply.view
        raise


async def probe_leaders(gateway: Gateway) -> tuple[bool, str]:
    """Ready while at least one partition's leader answered a read in time,
    within the last `READINESS_CACHE_MS` (concurrent callers share one
    probe). A partition whose leader did not is marked down in
    `gateway.health`: only the commands routed to it are refused. Every
    gateway sees the same partitions, so taking a worker out of rotation for
    one partition's election would only move that partition's refusals to
    the other workers and stop the other partitions' bets; a worker none of
    whose partitions answer (its NATS link is gone, or no ledger leader
    anywhere) is not ready."""
    async with gateway.readiness_lock:
        cached = gateway.readiness
        if cached is not None and time.monotonic() - cached[0] < READINESS_CACHE_MS / 1000:
            return cached[1], cached[2]
        ready, detail = await _probe_leaders_now(gateway)
        gateway.readiness = (time.monotonic(), ready, detail)
        return ready, detail


async def watch_partitions(gateway: Gateway) -> None:
    """Probe every `READINESS_CACHE_MS` until cancelled, so that a partition
    is marked down (and up again) without waiting for `/readyz` traffic."""
    while True:
        await probe_leaders(gateway)
        await asyncio.sleep(READINESS_CACHE_MS / 1000)


async def _probe_leaders_now(gateway: Gateway) -> tuple[bool, str]:
    partitions = gateway.partitions
    probes: dict[int, core.AnyQuery] = {}
    index = 0
    while len(probes) < partitions:
        account_id = f"readyz-probe-{index}"
        partition = core.partition_of(account_id, partitions)
        if partition not in probes:
            probes[partition] = core.GetAccount(request_id=query_id(), account_id=account_id)
        index += 1
    async with asyncio.TaskGroup() as group:
        asked = {
            partition: group.create_task(_answers(gateway, query))
            for partition, query in sorted(probes.items())
        }
    now = time.monotonic()
    for partition, task in asked.items():
        if task.result():
            gateway.health.answered(partition)
        else:
            gateway.health.silent(partition, now)
    silent = sorted(partition for partition, task in asked.items() if not task.result())
    if len(silent) == partitions:
        return False, "no ledger leader answered"
    if silent:
        return True, (
            f"{partitions - len(silent)} of {partitions} partition leaders answered; "
            f"partition {', '.join(map(str, silent))} unavailable (its commands get 503)"
        )
    return True, f"{partitions} partition leader(s) answered"


async def _answers(gateway: Gateway, query: core.AnyQuery) -> bool:
    try:
        async with asyncio.timeout(READINESS_DEADLINE_MS / 1000):
            await gateway.probe.submit(query)
    except (GaveUp, TimeoutError):
        return False
    return True


def validation_problem(raw_errors: Sequence[Any], path: str, request_id: str) -> Response:
    errors: list[dict[str, object]] = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in raw_errors[:20]
    ]
    malformed = any(error["type"] == "json_invalid" for error in errors)
    return p.problem_response(
        400 if malformed else 422,
        p.VALIDATION_FAILED,
        "the body is not valid JSON" if malformed else "the request is invalid",
        instance=path[:200],
        request_id=request_id,
        errors=errors,
    )
