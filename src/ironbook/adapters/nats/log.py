"""`Log` on a JetStream stream: one stream `LEDGER_<p>` per partition.

Appends are compare-and-set publishes (`Nats-Expected-Last-Sequence`) carrying
the writer's batch id as `Nats-Msg-Id`, so a retried append is de-duplicated by
the server. Several appends may be in flight at once: each is its own request
on one connection, and NATS keeps their order.

Reads use batched direct gets (`$JS.API.DIRECT.GET`), which any replica may
answer. A lagging replica can only return fewer entries, never different ones
(an entry at a sequence never changes), so reads are safe from followers. The
last sequence, which a writer decides on, always comes from the stream leader
(`STREAM.INFO`), never from a follower.

Tip announcements: after each acknowledged append the writer publishes the new
last sequence on the core NATS subject `tip.ledger.<p>` (not part of any stream,
fire and forget). A reader waiting for news listens there instead of polling:
with nothing announced past what it has, it reads again only when an
announcement arrives or `IDLE_POLL_MS` passes (a lost announcement, e.g. a
writer killed between the ack and the publish, costs at most that much
latency); once something is announced that its replica does not yet return,
it polls with a short backoff. Announcements are hints for when to read, never
data: what is applied always comes from the stream. Before them an idle
follower polled ~80 times a second, which cost an idle cluster about a
quarter of a core (NATS and replicas together).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any, NoReturn

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig

from ironbook.adapters.nats.provision import (
    ERR_WRONG_LAST_SEQUENCE,
    DirectGetFailed,
    append_only_stream,
    direct_get_batch,
    ensure_stream,
    request,
)
from ironbook.replication.concurrency import race, wait_for
from ironbook.replication.interfaces import (
    AppendUnknown,
    Fenced,
    LogEntry,
    LogUnavailable,
)

DEFAULT_APPEND_TIMEOUT_MS = 2000
DEFAULT_API_TIMEOUT_MS = 2000
DEFAULT_DUPLICATE_WINDOW_S = 120
DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024
_POLL_MIN_MS = 1
_POLL_MAX_MS = 20
IDLE_POLL_MS = 250
"""With nothing announced, a waiting reader reads again at least this often."""

_MSG_ID = "Nats-Msg-Id"
_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
_SEQUENCE = "Nats-Sequence"


def stream_name(partition: int) -> str:
    return f"LEDGER_{partition}"


def leader_elected_subject(partition: int) -> str:
    """Where JetStream announces each new leader of the partition's stream."""
    return f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream_name(partition)}"


def stream_subject(partition: int) -> str:
    return f"ledger.{partition}"


def tip_subject(partition: int) -> str:
    """Where appends are announced (outside the stream's subjects)."""
    return f"tip.ledger.{partition}"


def ledger_stream_config(
    partition: int, *, replicas: int = 3, duplicate_window_s: int = DEFAULT_DUPLICATE_WINDOW_S
) -> StreamConfig:
    """R3 on disk, nothing ever expires or is deleted: the log is the audit trail."""
    return append_only_stream(
        stream_name(partition),
        [stream_subject(partition)],
        replicas=replicas,
        duplicate_window_s=duplicate_window_s,
    )


class NatsLog:
    """The replicated log of one partition, on JetStream."""

    def __init__(
        self,
        nc: NatsClient,
        partition: int,
        *,
        append_timeout_ms: int = DEFAULT_APPEND_TIMEOUT_MS,
        api_timeout_ms: int = DEFAULT_API_TIMEOUT_MS,
        read_max_bytes: int = DEFAULT_READ_MAX_BYTES,
    ) -> None:
        self._nc = nc
        self.partition = partition
        self.stream = stream_name(partition)
        self.subject = stream_subject(partition)
        self._append_timeout_s = append_timeout_ms / 1000
        self._api_timeout_s = api_timeout_ms / 1000
        self._read_max_bytes = read_max_bytes
        self._tip_subject = tip_subject(partition)
        self._tip_seq = 0
        """The highest sequence announced since this log started listening."""
        self._tip_news = asyncio.Event()
        self._tip_subscription: Subscription | None = None
        self._election_subscription: Subscription | None = None
        self._next_election: asyncio.Future[None] | None = None
        """Resolved when the stream's next leader is elected."""

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        partition: int,
        *,
        replicas: int = 3,
        duplicate_window_s: int = DEFAULT_DUPLICATE_WINDOW_S,
        append_timeout_ms: int = DEFAULT_APPEND_TIMEOUT_MS,
    ) -> NatsLog:
        """Create the partition's stream if needed, then return its log."""
        config = ledger_stream_config(
            partition, replicas=replicas, duplicate_window_s=duplicate_window_s
        )
        await ensure_stream(nc.jetstream(), config)
        return cls(nc, partition, append_timeout_ms=append_timeout_ms)

    @property
    def max_payload_bytes(self) -> int:
        """The largest batch the connected server accepts (8 MB on clusters
        `LocalNatsCluster` starts, 1 MB by default elsewhere)."""
        return int(self._nc.max_payload)

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        assert expected_last_seq >= 0
        headers = {_EXPECTED_LAST_SEQ: str(expected_last_seq), _MSG_ID: batch_id}
        await self._listen_for_elections()
        try:
            reply = await race(
                request(
                    self._nc,
                    self.subject,
                    payload,
                    timeout_s=self._append_timeout_s,
                    headers=headers,
                ),
                self._stream_leader_elected(),
            )
        except StreamLeaderElected as err:
            # The stream leader that had the append stepped down: it will
            # never answer, and waiting out the timeout would hold every
            # write of the partition. Unknown: the writer retries at once,
            # under the same batch id.
            raise AppendUnknown(f"{self.stream}: append {batch_id}: {err}") from err
        except nats.errors.NoRespondersError as err:
            # Nobody took the message: it was not stored.
            raise LogUnavailable(f"{self.stream}: no responders") from err
        except nats.errors.MaxPayloadError as err:
            # Refused before sending; the writer must cut smaller batches.
            raise LogUnavailable(
                f"{self.stream}: batch of {len(payload)} bytes is over the server's "
                f"max_payload ({self.max_payload_bytes} bytes)"
            ) from err
        except (nats.errors.TimeoutError, nats.errors.Error, OSError) as err:
            raise AppendUnknown(f"{self.stream}: append {batch_id}: {err!r}") from err
        ack = _decode_api_reply(reply, self.stream)
        error = ack.get("error")
        if error is not None:
            code = error.get("err_code")
            description = error.get("description", "")
            if code == ERR_WRONG_LAST_SEQUENCE:
                raise Fenced(f"{self.stream}: expected {expected_last_seq}: {description}")
            raise LogUnavailable(f"{self.stream}: append refused ({code}): {description}")
        if ack.get("stream") != self.stream:
            raise LogUnavailable(f"{self.stream}: ack from stream {ack.get('stream')!r}")
        seq = int(ack["seq"])
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.publish(self._tip_subject, str(seq).encode())
        return seq

    async def last_seq(self) -> int:
        """From the stream leader, which answers `STREAM.INFO`."""
        try:
            reply = await request(
                self._nc, f"$JS.API.STREAM.INFO.{self.stream}", b"", timeout_s=self._api_timeout_s
            )
        except (nats.errors.Error, OSError) as err:
            raise LogUnavailable(f"{self.stream}: stream info: {err!r}") from err
        info = _decode_api_reply(reply, self.stream)
        if "error" in info:
            raise LogUnavailable(f"{self.stream}: stream info: {info['error']}")
        return int(info["state"]["last_seq"])

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        assert from_seq >= 1
        assert max_entries >= 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        if wait_ms > 0:
            await self._listen_for_tips()
        poll_ms = _POLL_MIN_MS
        while True:
            entries = await self._direct_get_batch(from_seq, max_entries)
            if entries:
                return entries
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return []
            if self._tip_subscription is None or self._tip_seq >= from_seq:
                # Announced but not returned yet (the replica that answered
                # lags), or no announcements to go by: poll.
                await asyncio.sleep(min(poll_ms / 1000, remaining_s))
                poll_ms = min(poll_ms * 2, _POLL_MAX_MS)
                continue
            await self._wait_for_tip(from_seq, min(IDLE_POLL_MS / 1000, remaining_s))
            poll_ms = _POLL_MIN_MS

    async def _wait_for_tip(self, from_seq: int, timeout_s: float) -> None:
        """Until `from_seq` is announced or `timeout_s` passes. Announcements
        of entries below it (this reader got them in an earlier batch) do not
        end the wait: each would cost a read that finds nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tip_seq < from_seq:
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return
            self._tip_news.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._tip_news.wait(), remaining_s)

    async def close(self) -> None:
        """Stop listening for announcements (the connection stays open)."""
        subscriptions = (self._tip_subscription, self._election_subscription)
        self._tip_subscription = self._election_subscription = None
        for subscription in subscriptions:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await subscription.unsubscribe()

    async def _listen_for_elections(self) -> None:
        """Subscribe to the stream's leader elections once; without them, an
        append the old leader drops waits out its timeout."""
        if self._election_subscription is not None:
            return

        async def on_elected(_msg: Msg) -> None:
            elected, self._next_election = self._next_election, None
            if elected is not None and not elected.done():
                elected.set_result(None)

        with contextlib.suppress(nats.errors.Error, OSError):
            self._election_subscription = await self._nc.subscribe(
                leader_elected_subject(self.partition), cb=on_elected
            )

    async def _stream_leader_elected(self) -> NoReturn:
        """Raises `StreamLeaderElected` at the stream's next leader election."""
        if self._next_election is None:
            self._next_election = asyncio.get_running_loop().create_future()
        # Shielded: one append giving up on it must not cancel it for the others.
        await asyncio.shield(self._next_election)
        raise StreamLeaderElected("a new stream leader was elected with the append in flight")

    async def _listen_for_tips(self) -> None:
        """Subscribe to announcements once; without NATS, reads just poll."""
        if self._tip_subscription is not None:
            return

        async def on_tip(msg: Msg) -> None:
            with contextlib.suppress(ValueError):
                seq = int(msg.data)
                if seq > self._tip_seq:
                    self._tip_seq = seq
                    self._tip_news.set()

        with contextlib.suppress(nats.errors.Error, OSError):
            self._tip_subscription = await self._nc.subscribe(self._tip_subject, cb=on_tip)

    async def _direct_get_batch(self, from_seq: int, max_entries: int) -> list[LogEntry]:
        """One batched direct get (`provision.direct_get_batch`)."""
        try:
            messages = await direct_get_batch(
                self._nc,
                self.stream,
                from_seq,
                max_entries,
                max_bytes=self._read_max_bytes,
                timeout_s=self._api_timeout_s,
            )
        except DirectGetFailed as err:
            raise LogUnavailable(str(err)) from err
        return [_entry(msg) for msg in messages]


class StreamLeaderElected(Exception):
    """The stream's leadership moved while a request was in flight."""


def _entry(msg: Msg) -> LogEntry:
    headers = msg.headers or {}
    return LogEntry(
        seq=int(headers[_SEQUENCE]), batch_id=headers.get(_MSG_ID, ""), payload=msg.data
    )


def _decode_api_reply(reply: Msg, stream: str) -> dict[str, Any]:
    try:
        decoded = json.loads(reply.data)
    except ValueError as err:
        raise LogUnavailable(f"{stream}: undecodable reply {reply.data[:200]!r}") from err
    if not isinstance(decoded, dict):
        raise LogUnavailable(f"{stream}: unexpected reply {decoded!r}")
    return decoded
