"""One client operation as a run's history records it, and as the history
checker (`replication.checker`) judges it.

`outcome` is `ok` (accepted), `fail` (a definite rejection, which changed
nothing) or `info` (unknown: the client gave up, so the command may or may
not have been applied). Monotonic times (`*_ns`) order operations within one
run (the simulator's are virtual); wall times place them on a chart.
`reply_hex` is the reply the client heard (`core.encode_outcome`), so the
checker can compare it with the log.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ironbook import core

OutcomeKind = Literal["ok", "fail", "info"]

QUERY_KINDS = frozenset(
    {"get_account", "list_account_bets", "get_bet", "get_market", "list_markets"}
)


class Operation(msgspec.Struct, frozen=True, omit_defaults=True):
    client: str
    request_id: str
    kind: str
    """The command's tag without its version: place_bet, deposit, get_account..."""
    invoke_ns: int
    complete_ns: int
    invoke_wall_ms: int
    complete_wall_ms: int
    outcome: OutcomeKind
    account_id: str = ""
    reply_hex: str = ""
    error: str = ""
    """Why an `info` operation has no outcome."""
    balance_minor: int | None = None
    """For a read (`get_account`): the balance it returned."""

    @property
    def is_query(self) -> bool:
        return self.kind in QUERY_KINDS

    def core_outcome(self) -> core.Outcome | None:
        if not self.reply_hex:
            return None
        return core.decode_outcome(bytes.fromhex(self.reply_hex))


def command_kind(command: core.AnyCommand | core.AnyQuery) -> str:
    tag = type(command).__struct_config__.tag
    return str(tag).split("/", 1)[0]


def answered(
    client: str,
    command: core.AnyCommand | core.AnyQuery,
    outcome: core.Outcome,
    *,
    invoke_ns: int,
    complete_ns: int,
    invoke_wall_ms: int,
    complete_wall_ms: int,
) -> Operation:
    """The operation of a client that heard the ledger's `outcome`."""
    balance = None
    if isinstance(outcome, core.Accepted) and isinstance(command, core.GetAccount):
        balance = getattr(outcome.result, "balance_minor", None)
    return Operation(
        client=client,
        request_id=command.request_id,
        kind=command_kind(command),
        invoke_ns=invoke_ns,
        complete_ns=complete_ns,
        invoke_wall_ms=invoke_wall_ms,
        complete_wall_ms=complete_wall_ms,
        outcome="ok" if isinstance(outcome, core.Accepted) else "fail",
        account_id=str(getattr(command, "account_id", "")),
        reply_hex=core.encode_outcome(outcome).hex(),
        balance_minor=balance,
    )
