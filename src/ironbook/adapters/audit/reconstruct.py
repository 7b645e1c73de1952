"""An account's balance history rebuilt from its partition's log alone.

The log is replayed with the replicas' fold rule (`ReplayState`: void and
quarantined entries are skipped) and every posting to the account becomes a line with
the balance after it. The replayed state's balance must equal the sum of the
lines; the caller compares it with what the ledger answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.core.postings import player_postings
from ironbook.replication.batch import ReplayState
from ironbook.replication.interfaces import Verifier


class BalanceLine(msgspec.Struct, frozen=True):
    seq: int
    """The log entry that moved the money."""
    at_ms: int
    kind: str
    reference: str
    amount_minor: int
    balance_minor: int


@dataclass
class Reconstruction:
    account_id: str
    partition: int
    verifier: Verifier
    """The partition's batch signatures."""
    lines: list[BalanceLine] = field(default_factory=list)
    replayed_seq: int = 0
    replay: ReplayState = field(init=False)

    def __post_init__(self) -> None:
        self.replay = ReplayState.empty(
            core.LedgerConfig(partition=self.partition), verifier=self.verifier
        )

    @property
    def balance_minor(self) -> int:
        return self.lines[-1].balance_minor if self.lines else 0

    @property
    def state_balance_minor(self) -> int | None:
        """The replayed state's balance (None: no such account in the log)."""
        account = self.replay.state.accounts.get(self.account_id)
        return account.balance_minor if account is not None else None

    async def extend(self, nc: NatsClient, to_seq: int) -> None:
        """Replay the log on up to `to_seq`."""
        log = AuditedLog(nc, self.partition)
        async for entry in read_log(log, self.replayed_seq + 1, to_seq):
            events = self.replay.apply(entry)
            self.replayed_seq = entry.seq
            for event in events or ():
                for account_id, amount_minor, kind, reference in player_postings(event):
                    if account_id == self.account_id:
                        self.lines.append(
                            BalanceLine(
                                seq=entry.seq,
                                at_ms=event.at_ms,
                                kind=kind,
                                reference=reference,
                                amount_minor=amount_minor,
                                balance_minor=self.balance_minor + amount_minor,
                            )
                        )


def reconstruction(
    account_id: str, partitions: int, verifier_of: Callable[[int], Verifier]
) -> Reconstruction:
    """`verifier_of`: a partition's batch signatures (raises what it raises)."""
    partition = core.partition_of(account_id, partitions)
    return Reconstruction(account_id, partition, verifier_of(partition))
