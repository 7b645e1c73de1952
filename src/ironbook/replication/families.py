"""Command families: which commands travel on which subject.

Every command belongs to exactly one family, and a batch request carries
commands of one family only, on `ironbook.cmdbatch.<partition>.<family>`. The
NATS permissions of an identity name the families it may send (the feed
ingester: market and query, never wallet), and the leader refuses a command
that arrives under another family's subject, so the subject cannot be used to
smuggle a deposit past those permissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from ironbook import core

Family = Literal["wallet", "betting", "market", "query"]
FAMILIES: tuple[Family, ...] = get_args(Family)

MARKET_COMMANDS = (
    core.CreateMarket,
    core.UpdatePrices,
    core.SuspendMarket,
    core.ResumeMarket,
    core.CloseMarket,
    core.SettleMarket,
    core.VoidMarket,
    core.ResettleMarket,
    core.RollbackSettlement,
    core.FeedBatch,
    core.SetProducerStatus,
    core.ContinueResult,
)
"""Commands about a market (every partition applies them to its own copy)."""

_BETTING_COMMANDS = (core.PlaceBet, core.CashOut, core.ReleaseBets, core.ArchiveSettled)
_WALLET_COMMANDS = (
    core.OpenAccount,
    core.Deposit,
    core.Withdraw,
    core.AdjustBalance,
    core.SetDepositLimits,
    core.SelfExclude,
)
_QUERIES = get_args(core.AnyQuery)


def _family(kind: type) -> Family:
    if issubclass(kind, _QUERIES):
        return "query"
    if issubclass(kind, MARKET_COMMANDS):
        return "market"
    if issubclass(kind, _BETTING_COMMANDS):
        return "betting"
    if issubclass(kind, _WALLET_COMMANDS):
        return "wallet"
    raise AssertionError(f"{kind.__name__} has no command family")


FAMILY_OF: Mapping[type, Family] = {
    kind: _family(kind) for kind in (*get_args(core.AnyCommand), *_QUERIES)
}
"""Every command and query type → its family (total: a new command type
without a family fails at import)."""


def family_of(command: core.AnyCommand | core.AnyQuery) -> Family:
    return FAMILY_OF[type(command)]
