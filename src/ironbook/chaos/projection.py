"""The history projection (the gateway's SQLite read model of a partition,
`services.gateway.history`) judged against a fold of the log.

The projector folds the log in chunks, commits each chunk with its position,
and resumes after a crash or restart from the last commit. The checker folds
the same log once, from the start, in memory, and compares: every entry row
(account, entry id, time, kind, amount, balance after, reference), the
projection's position, and every account's balance, which must also equal
the balance the checker's own replay of the ledger gives.

    projection = read_projection(data_dir / "history" / "p0.sqlite")
    check_history(..., read_model=ProjectionCheck(projection))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from ironbook import core
from ironbook.core import events as ev
from ironbook.core.postings import player_postings
from ironbook.services.gateway.history import ENTRY_INDEX_BITS

Row = tuple[int, str, int, int, str]
"""(at_ms, kind, amount_minor, balance_minor, reference)"""


class Projection(msgspec.Struct, frozen=True):
    """What a projection database holds."""

    path: str
    applied_seq: int
    balances: dict[str, int]
    rows: dict[tuple[str, int], Row]
    """(account_id, entry_id) -> row."""


def projection_path(data_dir: Path, partition: int = 0) -> Path:
    """Where `LocalCluster` puts partition `partition`'s projection."""
    return data_dir / "history" / f"p{partition}.sqlite"


def read_position(path: Path) -> int | None:
    """The projection's applied log position, None if it cannot be read."""
    try:
        with _connect(path) as db:
            row = db.execute("SELECT applied_seq FROM position").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def read_projection(path: Path) -> Projection:
    """Read-only, one consistent snapshot (one read transaction)."""
    with _connect(path) as db:
        db.execute("BEGIN")
        applied_seq = int(db.execute("SELECT applied_seq FROM position").fetchone()[0])
        balances = {
            str(account): int(balance)
            for account, balance in db.execute("SELECT account_id, balance_minor FROM accounts")
        }
        rows = {
            (str(r[0]), int(r[1])): (int(r[2]), str(r[3]), int(r[4]), int(r[5]), str(r[6]))
            for r in db.execute(
                "SELECT account_id, entry_id, at_ms, kind, amount_minor, balance_minor, "
                "reference FROM entries"
            )
        }
        db.execute("COMMIT")
    return Projection(str(path), applied_seq, balances, rows)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10)


class ProjectionFold:
    """What the projection must hold, from the applied events of the log
    (void entries left out, as the replay decides)."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.rows: dict[tuple[str, int], Row] = {}

    def apply(self, seq: int, events: Sequence[core.AnyEvent]) -> None:
        index = 0
        for event in events:
            if isinstance(event, ev.AccountOpened):
                self.balances.setdefault(event.account_id, 0)
                continue
            for account_id, amount_minor, kind, reference in player_postings(event):
                balance = self.balances.get(account_id, 0) + amount_minor
                self.balances[account_id] = balance
                index += 1
                entry_id = (seq << ENTRY_INDEX_BITS) | index
                self.rows[(account_id, entry_id)] = (
                    event.at_ms,
                    kind,
                    amount_minor,
                    balance,
                    reference,
                )


def compare(
    projection: Projection,
    fold: ProjectionFold,
    last_seq: int,
    ledger_balances: Mapping[str, int],
) -> list[tuple[str, list[int]]]:
    """Differences as (detail, log positions involved); empty if it agrees."""
    found: list[tuple[str, list[int]]] = []
    if projection.applied_seq != last_seq:
        found.append(
            (
                f"the projection is at position {projection.applied_seq}, the log at {last_seq}",
                [projection.applied_seq, last_seq],
            )
        )
    for key in sorted(fold.rows.keys() - projection.rows.keys()):
        found.append((f"entry {key[1]} of {key[0]} missing: {fold.rows[key]}", [_seq(key)]))
    for key in sorted(projection.rows.keys() - fold.rows.keys()):
        found.append(
            (f"entry {key[1]} of {key[0]} not in the log: {projection.rows[key]}", [_seq(key)])
        )
    for key in sorted(fold.rows.keys() & projection.rows.keys()):
        if fold.rows[key] != projection.rows[key]:
            found.append(
                (
                    f"entry {key[1]} of {key[0]} is {projection.rows[key]}, the log says "
                    f"{fold.rows[key]}",
                    [_seq(key)],
                )
            )
    for account in sorted(fold.balances.keys() | projection.balances.keys()):
        projected = projection.balances.get(account)
        folded = fold.balances.get(account)
        ledger = ledger_balances.get(account, 0)
        if projected != folded or folded != ledger:
            found.append(
                (
                    f"{account} balance: projection {projected}, fold of the log {folded}, "
                    f"ledger replay {ledger}",
                    [],
                )
            )
    return found


class ProjectionCheck:
    """A projection as the history checker's `LogFold`: the checker feeds it
    the log, then asks how the projection differs from the fold."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self._fold = ProjectionFold()

    def apply(self, seq: int, events: Sequence[core.AnyEvent]) -> None:
        self._fold.apply(seq, events)

    def differences(
        self, last_seq: int, ledger_balances: Mapping[str, int]
    ) -> list[tuple[str, list[int]]]:
        found = compare(self.projection, self._fold, last_seq, ledger_balances)
        return [(f"{self.projection.path}: {detail}", seqs) for detail, seqs in found]


def _seq(key: tuple[str, int]) -> int:
    return key[1] >> ENTRY_INDEX_BITS
