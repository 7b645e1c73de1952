"""Ledger-entry history: a projector that folds one partition's log into a
SQLite read model, and answers history pages over NATS.

    python -m ironbook.bootstrap history --nats URL --partition P --db FILE

Why a projector and not the ledger state: the state must stay small (it is
snapshotted, hashed and held in every replica's memory), while entry history
grows forever. The projector tails the partition's log like a follower does,
applying the same chain rule (an entry whose `prev_batch_id` is not the last
applied batch is void and skipped), and writes every player posting with the
balance after it. Each read chunk commits in one SQLite transaction together
with the log position, so a restarted projector resumes exactly where it was.

It also keeps the final view of every archived bet and market (the ledger
moves them out of its state a retention window after their result: a
`SettledArchived` entry carries their views), so the gateway still serves
them by id.

History reads are eventually consistent (the projection trails the ledger by
up to `CATCH_UP_PAUSE_MS` plus the time to read and commit a chunk); each page says
the log position it reflects (`as_of_seq`). Balances and bets, which money
decisions depend on, are always read from the ledger itself.

Request (msgpack) on `ironbook.history.p<P>` (queue group, so several
projectors of a partition share the load): `HistoryRequest`; reply:
`HistoryPage` or `HistoryError`. On `ironbook.history.archived-p<P>`:
`ArchivedRequest`; reply: `ArchivedView` or `HistoryError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook.adapters.nats.log import NatsLog
from ironbook.core import events as ev
from ironbook.core.postings import player_postings
from ironbook.replication.batch import admit
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import LogEntry, LogUnavailable, Verifier

log = logging.getLogger("ironbook.history")
T = TypeVar("T")

READ_CHUNK_ENTRIES = 256
READ_WAIT_MS = 0
"""One direct get per read: the pause below, not the log adapter's polling, sets
the pace once caught up."""
CATCH_UP_PAUSE_MS = 50
"""Pause after a read that found the projection caught up: history may trail
by this much, and the projector costs NATS a read per pause, not per batch
(replicas poll the log within a millisecond; history need not)."""
MAX_PAGE = 200
ENTRY_INDEX_BITS = 32
"""entry_id = log sequence << 32 | index of the posting within the entry."""
CACHE_KIB = 65_536
MAX_CACHED_BALANCES = 1_000_000
"""Balances kept in memory between folds (about 150 MB at most); past this
the cache starts again empty."""


HISTORY_TIMEOUT_MS = 2_000


def history_subject(partition: int) -> str:
    return f"ironbook.history.p{partition}"


def archived_subject(partition: int) -> str:
    """Within `history_subject`'s family (one token), which the NATS
    identities of the gateway and the projector already allow."""
    return f"ironbook.history.archived-p{partition}"


class HistoryRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    account_id: str
    after: int | None = None
    limit: int = 50


class HistoryEntry(msgspec.Struct, frozen=True):
    entry_id: int
    at_ms: int
    kind: str
    """What moved the money: `deposit`, `withdrawal`, `adjustment`, `bet`,
    `settlement`, `bet_refund` (an in-play bet rejected at the end of its delay)."""
    amount_minor: int
    """Signed: positive credits the account."""
    balance_minor: int
    """The account's balance after this entry."""
    reference: str
    """The transaction id, bet id or market id."""


class HistoryPage(msgspec.Struct, frozen=True, tag="page"):
    entries: tuple[HistoryEntry, ...]
    next_after: int | None
    as_of_seq: int


class HistoryError(msgspec.Struct, frozen=True, tag="error"):
    code: str
    message: str


HistoryReply = HistoryPage | HistoryError


class ArchivedRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An archived bet or market, by id: exactly one of the two."""

    bet_id: str = ""
    market_id: str = ""


class ArchivedView(msgspec.Struct, frozen=True, tag="archived"):
    view: ev.BetView | ev.MarketView
    """Its final view, as the ledger had it when it archived it."""
    archived_ms: int


ArchivedReply = ArchivedView | HistoryError

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(HistoryRequest)
_reply_decoder: msgspec.msgpack.Decoder[HistoryReply] = msgspec.msgpack.Decoder(HistoryReply)
_archived_request_decoder = msgspec.msgpack.Decoder(ArchivedRequest)
_archived_reply_decoder: msgspec.msgpack.Decoder[ArchivedReply] = msgspec.msgpack.Decoder(
    ArchivedReply
)
_bet_view_decoder = msgspec.msgpack.Decoder(ev.BetView)
_market_view_decoder = msgspec.msgpack.Decoder(ev.MarketView)


class HistoryUnavailable(Exception):
    """No projector answered in time, or its answer could not be read."""


class NatsHistory:
    """The gateway's way to the projectors: one request per page, answered by
    whichever projector of the partition's queue group is up."""

    def __init__(self, nc: NatsClient, *, timeout_ms: int = HISTORY_TIMEOUT_MS) -> None:
        self._nc = nc
        self._timeout_s = timeout_ms / 1000

    async def page(self, partition: int, request: HistoryRequest) -> HistoryReply:
        return await self._ask(history_subject(partition), request, _reply_decoder)

    async def archived(self, partition: int, request: ArchivedRequest) -> ArchivedReply:
        return await self._ask(archived_subject(partition), request, _archived_reply_decoder)

    async def _ask(
        self,
        subject: str,
        request: HistoryRequest | ArchivedRequest,
        decoder: msgspec.msgpack.Decoder[T],
    ) -> T:
        try:
            message = await self._nc.request(
                subject, _encoder.encode(request), timeout=self._timeout_s
            )
            return decoder.decode(message.data)
        except (nats.errors.Error, OSError, msgspec.MsgspecError) as err:
            raise HistoryUnavailable(str(err)) from None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    applied_seq INTEGER NOT NULL,
    last_batch_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    balance_minor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    account_id TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    balance_minor INTEGER NOT NULL,
    reference TEXT NOT NULL,
    PRIMARY KEY (account_id, entry_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archived_bets (
    bet_id TEXT PRIMARY KEY,
    archived_ms INTEGER NOT NULL,
    view BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archived_markets (
    market_id TEXT PRIMARY KEY,
    archived_ms INTEGER NOT NULL,
    view BLOB NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO position (id, applied_seq, last_batch_id) VALUES (0, 0, '');
"""


class HistoryStore:
    """The SQLite read model of one partition."""

    def __init__(self, path: Path, *, verifier: Verifier | None) -> None:
        """`verifier`: the partition's batch signatures (None: trusted
        unchecked, for logs a test made)."""
        self._verifier = verifier
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Postings land all over the (account, entry) index: keep more of it
        # in memory than SQLite's default 2 MB.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        self._balances: dict[str, int] = {}
        """Committed balances read or written so far: this projector is the
        table's only writer, so they stay true (dropped if a fold fails)."""

    def close(self) -> None:
        self._db.close()

    def position(self) -> tuple[int, str]:
        row = self._db.execute("SELECT applied_seq, last_batch_id FROM position").fetchone()
        return int(row[0]), str(row[1])

    def fold(self, entries: list[LogEntry]) -> int:
        """Apply log entries (in order, following the stored position) in one
        transaction (by the replicas' fold rule, `replication.batch`); returns
        how many were void or quarantined."""
        applied_seq, last_batch_id = self.position()
        voided = 0
        opened: list[tuple[str]] = []
        rows: list[tuple[str, int, int, str, int, int, str]] = []
        balances: dict[str, int] = {}
        """Balances after this fold, of the accounts it touches."""
        archived_bets: list[tuple[str, int, bytes]] = []
        archived_markets: list[tuple[str, int, bytes]] = []
        for entry in entries:
            if entry.seq != applied_seq + 1:
                raise LogUnavailable(f"expected entry {applied_seq + 1}, got {entry.seq}")
            applied_seq = entry.seq
            events = admit(entry, last_batch_id, self._verifier).events
            if events is None:
                voided += 1
                continue
            last_batch_id = entry.batch_id
            index = 0
            for event in events:
                if isinstance(event, ev.AccountOpened):
                    opened.append((event.account_id,))
                    continue
                if isinstance(event, ev.SettledArchived):
                    archived_bets.extend(
                        (view.bet_id, event.at_ms, _encoder.encode(view)) for view in event.bets
                    )
                    archived_markets.extend(
                        (view.market_id, event.at_ms, _encoder.encode(view))
                        for view in event.markets
                    )
                    continue
                for account_id, amount_minor, kind, reference in player_postings(event):
                    balance = balances.get(account_id)
                    if balance is None:
                        balance = self._committed_balance(account_id)
                    balance += amount_minor
                    balances[account_id] = balance
                    index += 1
                    rows.append(
                        (
                            account_id,
                            (entry.seq << ENTRY_INDEX_BITS) | index,
                            event.at_ms,
                            kind,
                            amount_minor,
                            balance,
                            reference,
                        )
                    )
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR IGNORE INTO accounts VALUES (?, 0)", opened)
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)", balances.items())
            db.executemany("INSERT OR REPLACE INTO archived_bets VALUES (?, ?, ?)", archived_bets)
            # A market id may be used again once archived: the latest archive stands.
            db.executemany(
                "INSERT OR REPLACE INTO archived_markets VALUES (?, ?, ?)", archived_markets
            )
            db.execute(
                "UPDATE position SET applied_seq = ?, last_batch_id = ?",
                (applied_seq, last_batch_id),
            )
            db.execute("COMMIT")
        except BaseException:
            self._balances.clear()
            if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                db.execute("ROLLBACK")
            raise
        if len(self._balances) + len(balances) > MAX_CACHED_BALANCES:
            self._balances.clear()
        self._balances.update(balances)
        return voided

    def _committed_balance(self, account_id: str) -> int:
        balance = self._balances.get(account_id)
        if balance is None:
            row = self._db.execute(
                "SELECT balance_minor FROM accounts WHERE account_id = ?", (account_id,)
            ).fetchone()
            balance = int(row[0]) if row else 0
            self._balances[account_id] = balance
        return balance

    def page(self, request: HistoryRequest) -> HistoryReply:
        if not 1 <= request.limit <= MAX_PAGE:
            return HistoryError(code="invalid_cursor", message=f"limit must be 1..{MAX_PAGE}")
        known = self._db.execute(
            "SELECT 1 FROM accounts WHERE account_id = ?", (request.account_id,)
        ).fetchone()
        if known is None:
            return HistoryError(
                code="unknown_account", message=f"no account {request.account_id!r}"
            )
        rows = self._db.execute(
            "SELECT entry_id, at_ms, kind, amount_minor, balance_minor, reference FROM entries "
            "WHERE account_id = ? AND entry_id > ? ORDER BY entry_id LIMIT ?",
            (request.account_id, request.after or 0, request.limit + 1),
        ).fetchall()
        more = len(rows) > request.limit
        entries = tuple(HistoryEntry(*row) for row in rows[: request.limit])
        return HistoryPage(
            entries=entries,
            next_after=entries[-1].entry_id if more else None,
            as_of_seq=self.position()[0],
        )

    def archived(self, request: ArchivedRequest) -> ArchivedReply:
        if bool(request.bet_id) == bool(request.market_id):
            return HistoryError(
                code="validation_failed", message="name exactly one of bet_id and market_id"
            )
        if request.bet_id:
            row = self._db.execute(
                "SELECT archived_ms, view FROM archived_bets WHERE bet_id = ?", (request.bet_id,)
            ).fetchone()
            if row is None:
                return HistoryError(code="unknown_bet", message=f"no bet {request.bet_id!r}")
            return ArchivedView(view=_bet_view_decoder.decode(row[1]), archived_ms=row[0])
        row = self._db.execute(
            "SELECT archived_ms, view FROM archived_markets WHERE market_id = ?",
            (request.market_id,),
        ).fetchone()
        if row is None:
            return HistoryError(code="unknown_market", message=f"no market {request.market_id!r}")
        return ArchivedView(view=_market_view_decoder.decode(row[1]), archived_ms=row[0])


async def project(nc: NatsClient, partition: int, store: HistoryStore, stop: asyncio.Event) -> None:
    """Tail the partition's log into the store until `stop` is set."""
    ledger_log = NatsLog(nc, partition)
    try:
        await _tail(ledger_log, partition, store, stop)
    finally:
        await ledger_log.close()


async def _tail(
    ledger_log: NatsLog, partition: int, store: HistoryStore, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        applied_seq, _ = store.position()
        try:
            entries = await ledger_log.read(
                applied_seq + 1, max_entries=READ_CHUNK_ENTRIES, wait_ms=READ_WAIT_MS
            )
        except LogUnavailable as err:
            log.warning("partition %d: log unavailable (%s); retrying", partition, err)
            await asyncio.sleep(0.5)
            continue
        if entries:
            voided = store.fold(list(entries))
            if voided:
                log.info("partition %d: skipped %d void or quarantined entries", partition, voided)
        if len(entries) < READ_CHUNK_ENTRIES:
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), CATCH_UP_PAUSE_MS / 1000)


async def serve(nc: NatsClient, partition: int, store: HistoryStore, stop: asyncio.Event) -> None:
    """Fold the partition's log into `store` and answer pages, until `stop`."""

    async def on_request(msg: Msg) -> None:
        try:
            request = _request_decoder.decode(msg.data)
            reply: HistoryReply = store.page(request)
        except msgspec.MsgspecError as err:
            reply = HistoryError(code="validation_failed", message=str(err))
        with contextlib.suppress(Exception):
            await msg.respond(_encoder.encode(reply))

    async def on_archived(msg: Msg) -> None:
        try:
            request = _archived_request_decoder.decode(msg.data)
            reply: ArchivedReply = store.archived(request)
        except msgspec.MsgspecError as err:
            reply = HistoryError(code="validation_failed", message=str(err))
        with contextlib.suppress(Exception):
            await msg.respond(_encoder.encode(reply))

    subscriptions = [
        await nc.subscribe(
            history_subject(partition), queue=f"history-p{partition}", cb=on_request
        ),
        await nc.subscribe(
            archived_subject(partition), queue=f"history-p{partition}", cb=on_archived
        ),
    ]
    try:
        await project(nc, partition, store, stop)
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
