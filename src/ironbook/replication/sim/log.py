"""The simulated log: one linearizable append-only log, as the JetStream
cluster presents it, reached over the simulated network.

It models the two engine behaviours the protocol relies on, exactly as
measured on NATS (see ENGINE-NOTES.md): a batch id seen inside the
de-duplication window is answered with its original sequence BEFORE the
expected last sequence is checked; a new batch id with a stale expected
sequence is refused (`Fenced`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgspec

from ironbook.replication.batch import decode_batch, encode_signed_batch
from ironbook.replication.interfaces import (
    AppendUnknown,
    Fenced,
    LogEntry,
    LogUnavailable,
    Signer,
)
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.network import CallTimeout, Network

AppendHook = Callable[[str, int], None]
"""Called with (writer host name, sequence) when an append lands."""


class LogService:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        now_ms: Callable[[], int],
        dedupe_window_ms: int,
        enforce_expected_seq: bool = True,
        forge_predecessor: Signer | None = None,
    ) -> None:
        self._loop = loop
        self._now_ms = now_ms
        self._dedupe_window_ms = dedupe_window_ms
        self._enforce_expected_seq = enforce_expected_seq
        self._forge_predecessor = forge_predecessor
        self.entries: list[LogEntry] = []
        self._seen: dict[str, tuple[int, int]] = {}
        """batch id -> (sequence, appended at ms)."""
        self._waiters: list[asyncio.Future[None]] = []
        self.on_append: AppendHook | None = None
        self.trace: Callable[[str], None] | None = None
        self.duplicates_answered = 0
        self.fenced = 0

    def last_seq(self) -> int:
        return len(self.entries)

    def append(self, writer: str, payload: bytes, expected_last_seq: int, batch_id: str) -> int:
        now_ms = self._now_ms()
        seen = self._seen.get(batch_id)
        if seen is not None and now_ms - seen[1] < self._dedupe_window_ms:
            self.duplicates_answered += 1
            if self.trace is not None:
                self.trace(f"log: {writer} {batch_id} is a duplicate of seq {seen[0]}")
            return seen[0]
        last_seq = len(self.entries)
        if self._enforce_expected_seq and expected_last_seq != last_seq:
            self.fenced += 1
            if self.trace is not None:
                self.trace(f"log: {writer} {batch_id} expected {expected_last_seq}: fenced")
            raise Fenced(f"wrong last sequence: {last_seq} (expected {expected_last_seq})")
        if self._forge_predecessor:
            # Mutations only: every batch claims the entry before it as its
            # predecessor (signed again with the replicas' key), which turns
            # the replay-time chain check off.
            record = decode_batch(payload)
            actual_prev = self.entries[-1].batch_id if self.entries else ""
            payload = encode_signed_batch(
                self._forge_predecessor, batch_id, actual_prev, record.events
            )
        seq = last_seq + 1
        self.entries.append(LogEntry(seq=seq, batch_id=batch_id, payload=payload))
        self._seen[batch_id] = (seq, now_ms)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve(waiter)
        if self.trace is not None:
            self.trace(f"log: {writer} {batch_id} (after {_prev(payload)}) landed at seq {seq}")
        if self.on_append is not None:
            self.on_append(writer, seq)
        return seq

    def publish_foreign(self, payload: bytes, batch_id: str) -> int:
        """Append as a writer outside the protocol does (a client publishing
        straight onto the stream): no expected sequence, a fresh id."""
        seq = len(self.entries) + 1
        self.entries.append(LogEntry(seq=seq, batch_id=batch_id, payload=payload))
        self._seen[batch_id] = (seq, self._now_ms())
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve(waiter)
        if self.trace is not None:
            self.trace(f"log: foreign {batch_id} (after {_prev(payload)}) landed at seq {seq}")
        return seq

    def read(self, from_seq: int, max_entries: int) -> list[LogEntry]:
        start = max(from_seq, 1) - 1
        return self.entries[start : start + max_entries]

    async def wait_for_entry_after(self, seq: int, timeout_ms: float) -> None:
        if len(self.entries) > seq or timeout_ms <= 0:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        timer = self._loop.call_later(timeout_ms / 1000, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()


def _prev(payload: bytes) -> str:
    try:
        return decode_batch(payload).prev_batch_id or "-"
    except msgspec.MsgspecError:
        return "undecodable"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SimLog:
    """One host's connection to the log (implements `interfaces.Log`)."""

    def __init__(
        self,
        service: LogService,
        network: Network,
        host: Host,
        *,
        now_ms: Callable[[], int],
        request_timeout_ms: int,
        before_append: Callable[[Host], None] | None = None,
    ) -> None:
        self._before_append = before_append
        self._service = service
        self._network = network
        self._host = host
        self._now_ms = now_ms
        self._timeout_ms = request_timeout_ms

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        writer = self._host.name
        if self._before_append is not None:
            self._before_append(self._host)
        try:
            return await self._network.call(
                self._host,
                "log",
                lambda: self._service.append(writer, payload, expected_last_seq, batch_id),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown) as error:
            raise AppendUnknown(f"append {batch_id}: no ack") from error

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        # A long poll: the cluster holds the request until an entry exists or
        # `wait_ms` passes, then answers.
        await self._service.wait_for_entry_after(from_seq - 1, wait_ms)
        try:
            return await self._network.call(
                self._host,
                "log",
                lambda: self._service.read(from_seq, max_entries),
                timeout_ms=self._timeout_ms,
            )
        except (CallTimeout, HostDown) as error:
            raise LogUnavailable("read: no answer") from error

    async def last_seq(self) -> int:
        try:
            return await self._network.call(
                self._host, "log", self._service.last_seq, timeout_ms=self._timeout_ms
            )
        except (CallTimeout, HostDown) as error:
            raise LogUnavailable("last_seq: no answer") from error
