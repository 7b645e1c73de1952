"""Who issued a command, and what each role may issue: the one permission
table, read by the gateway before it sends a command and by `decide` when
the ledger judges it.

A command carries the `Principal` its sender authenticated: the gateway puts
the token's subject, role, account scope and token id on every command it
sends; a service puts its own identity (`ingest` for the feed ingester and
settlement, `ledger` for what the replicas send themselves, `ops` for
operator tools that only read). `decide` refuses, and records nothing for,
a command without a principal, from a role the table does not allow, or
naming an account outside the principal's scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec

from ironbook.core import commands as c
from ironbook.core import queries as q
from ironbook.core.commands import Principal, Role, ServiceRole
from ironbook.core.outcomes import RejectionCode as R

STAFF_ROLES: frozenset[str] = frozenset({"trader", "cashier", "admin", "auditor"})
AnyCommand = TypeVar("AnyCommand", bound=c.Command)

_QUERIES_FOR_ANYONE = (q.GetBet, q.GetMarket, q.ListMarkets, q.QuoteCashOut)
"""Reads any person may make (a bettor: of its own account)."""
_MARKET_DESK = (
    c.CreateMarket,
    c.CreateMarketV1,
    c.UpdatePrices,
    c.SuspendMarket,
    c.ResumeMarket,
    c.CloseMarket,
    c.SettleMarket,
    c.VoidMarket,
    c.ResettleMarket,
    c.RollbackSettlement,
)

PERMITTED: Mapping[Role, frozenset[type[c.Command]]] = {
    "bettor": frozenset(
        {
            c.Withdraw,
            c.SetDepositLimits,
            c.SelfExclude,
            c.PlaceBet,
            c.PlaceBetV1,
            c.CashOut,
            q.GetAccount,
            q.ListAccountBets,
            *_QUERIES_FOR_ANYONE,
        }
    ),
    "cashier": frozenset({c.Deposit, q.GetAccount, q.ListAccountBets, *_QUERIES_FOR_ANYONE}),
    "trader": frozenset({*_MARKET_DESK, q.ListAccountBets, *_QUERIES_FOR_ANYONE}),
    "admin": frozenset(
        {
            c.OpenAccount,
            c.Deposit,
            c.Withdraw,
            c.AdjustBalance,
            *_MARKET_DESK,
            q.GetAccount,
            q.ListAccountBets,
            *_QUERIES_FOR_ANYONE,
        }
    ),
    "auditor": frozenset({q.GetAccount, q.ListAccountBets, *_QUERIES_FOR_ANYONE}),
    "ingest": frozenset(
        {
            c.FeedBatch,
            c.SetProducerStatus,
            c.CloseMarket,
            c.SettleMarket,
            c.VoidMarket,
            c.ResettleMarket,
            c.RollbackSettlement,
            q.GetFeedCursor,
            q.GetMarket,
            q.ListMarkets,
        }
    ),
    "ledger": frozenset({c.ReleaseBets, c.ContinueResult, c.ArchiveSettled}),
    "ops": frozenset({q.GetAccount, q.ListAccountBets, q.GetFeedCursor, *_QUERIES_FOR_ANYONE}),
}
"""Role → the command and query types it may issue; nothing else."""

MONEY_FOR_STAFF = (c.Deposit, c.Withdraw, c.AdjustBalance)
"""Money movements that need a reason when staff make them."""


_ROLES_FOR: Mapping[type[c.Command], tuple[Role, ...]] = {
    kind: tuple(role for role, kinds in PERMITTED.items() if kind in kinds)
    for kind in frozenset().union(*PERMITTED.values())
}


def roles_for(kind: type[c.Command]) -> tuple[Role, ...]:
    """The roles that may issue `kind`, in table order."""
    return _ROLES_FOR.get(kind, ())


def permission_refusal(
    principal: Principal | None, kind: type[c.Command], account_id: str | None
) -> tuple[str, str] | None:
    """Why `principal` may not issue a `kind` naming `account_id` (None: no
    account), as (rejection code, message); None if it may."""
    if principal is None:
        return R.UNAUTHENTICATED, "the command carries no principal"
    if kind not in PERMITTED[principal.role]:
        allowed = "/".join(roles_for(kind)) or "no role"
        return (
            R.FORBIDDEN,
            f"role {principal.role!r} may not issue {kind.__name__} (needs {allowed})",
        )
    if principal.role == "bettor" and principal.account_id is None:
        return R.FORBIDDEN, "a bettor principal must name its account"
    if (
        account_id is not None
        and principal.account_id is not None
        and account_id != principal.account_id
    ):
        return (
            R.FORBIDDEN,
            f"{principal.subject!r} may only act on account {principal.account_id!r}",
        )
    return None


def command_refusal(command: c.Command) -> tuple[str, str] | None:
    """`permission_refusal` for a command, with the account it names."""
    return permission_refusal(
        command.principal, type(command), getattr(command, "account_id", None)
    )


Issuer = Principal | Callable[[c.Command], Principal]
"""Who a ledger client's commands are from: one identity (a service), or a
principal per command (`acting` for a workload)."""


def service_principal(role: ServiceRole, subject: str) -> Principal:
    """A service's own identity, e.g. `service_principal("ingest", "feed-ingest")`."""
    return Principal(subject=subject, role=role)


def acting_principal(command: c.Command, subject: str) -> Principal:
    """For drivers that play every person at once (the simulator's and
    chaos workloads, the demo, the benchmarks): the principal of the first
    role allowed to issue `command`, scoped to the account it names if that
    role is a bettor's (a bettor only for a command naming an account).
    Never for a request from outside."""
    named = getattr(command, "account_id", None)
    role = next(r for r in roles_for(type(command)) if r != "bettor" or named is not None)
    account_id = named if role == "bettor" else None
    return Principal(subject=f"{subject}:{role}", role=role, account_id=account_id)


def acting(subject: str) -> Issuer:
    """An issuer for a driver that plays every person: `acting_principal`
    of each command."""
    return lambda command: acting_principal(command, subject)


def issued(command: AnyCommand, issuer: Issuer | None) -> AnyCommand:
    """`command` as `issuer` sends it: a command that names its principal
    already (the gateway's, from the caller's token) keeps it."""
    if command.principal is not None or issuer is None:
        return command
    principal = issuer if isinstance(issuer, Principal) else issuer(command)
    return msgspec.structs.replace(command, principal=principal)
