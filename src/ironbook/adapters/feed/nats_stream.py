"""A producer's feed, durable in JetStream: stream `FEED_<producer>`.

Subjects are `feed.<producer>.<group>.<kind>` (`group`: `market`, `result` or
`alive`; see `messages.message_subject`). The contract for anyone publishing
into it (the simulator, or an external provider's bridge):

- the payload is one message, JSON, as `messages.encode_message` writes it;
- its `cursor` is its stream sequence: publish with
  `Nats-Expected-Last-Sequence: <cursor - 1>` and `Nats-Msg-Id:
  <producer>:<cursor>`, so a retried publish is stored once and two
  publishers can never interleave;
- nothing is ever deleted (R3, file storage), so any cursor can be recovered.

Reads are batched direct gets, which any replica may answer; a lagging
replica can only return fewer messages, never other ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from ironbook.adapters.feed.messages import (
    AnyFeedMessage,
    decode_message,
    encode_message,
    message_subject,
)
from ironbook.adapters.feed.provider import FeedUnavailable
from ironbook.adapters.nats.provision import ensure_stream, request

log = logging.getLogger("ironbook.feed.stream")

DEFAULT_API_TIMEOUT_MS = 2_000
DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024
DUPLICATE_WINDOW_S = 120
PUBLISH_WINDOW = 256
PUBLISH_ATTEMPTS = 5
PUBLISH_RETRY_PAUSE_S = 0.2
ITERATE_BUFFER_MESSAGES = 10_000
ITERATE_PENDING_MESSAGES = 200_000
ITERATE_PENDING_BYTES = 256 * 1024 * 1024
_POLL_MIN_MS = 1
_POLL_MAX_MS = 20


class FeedPublishRefused(Exception):
    """The stream refused a message (another publisher, or a cursor that is
    not the next sequence): the publisher must resynchronise."""


def feed_stream_name(producer: str) -> str:
    return f"FEED_{producer}"


def feed_stream_config(producer: str, *, replicas: int = 3) -> StreamConfig:
    return StreamConfig(
        name=feed_stream_name(producer),
        subjects=[f"feed.{producer}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        discard=DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW_S,
        deny_delete=True,
        allow_direct=True,
    )


class NatsFeedStream:
    """One producer's feed stream: a `FeedProvider`, and the publisher's side."""

    def __init__(
        self,
        nc: NatsClient,
        producer: str,
        *,
        api_timeout_ms: int = DEFAULT_API_TIMEOUT_MS,
        read_max_bytes: int = DEFAULT_READ_MAX_BYTES,
    ) -> None:
        self._nc = nc
        self._producer = producer
        self.stream = feed_stream_name(producer)
        self._api_timeout_s = api_timeout_ms / 1000
        self._read_max_bytes = read_max_bytes
        self.malformed = 0
        """Messages skipped because they could not be decoded."""

    @classmethod
    async def open(cls, nc: NatsClient, producer: str, *, replicas: int = 3) -> NatsFeedStream:
        """Create the stream if needed."""
        await ensure_stream(nc.jetstream(), feed_stream_config(producer, replicas=replicas))
        return cls(nc, producer)

    @property
    def producer(self) -> str:
        return self._producer

    async def _info(self) -> dict[str, Any]:
        try:
            reply = await request(
                self._nc, f"$JS.API.STREAM.INFO.{self.stream}", b"", timeout_s=self._api_timeout_s
            )
            info = json.loads(reply.data)
        except (nats.errors.Error, OSError, ValueError) as err:
            raise FeedUnavailable(f"{self.stream}: stream info: {err!r}") from err
        if not isinstance(info, dict) or "error" in info:
            raise FeedUnavailable(f"{self.stream}: stream info: {info!r}")
        state = info.get("state", {})
        assert isinstance(state, dict)
        return state

    async def tail_cursor(self) -> int:
        """The newest message's cursor, from the stream leader."""
        return int((await self._info())["last_seq"])

    async def first_cursor(self) -> int:
        """The oldest message kept (1 unless someone trimmed the stream)."""
        return int((await self._info())["first_seq"])

    async def get(self, cursor: int) -> AnyFeedMessage | None:
        """The message at `cursor`; None if there is none or it is unreadable."""
        messages = await self._direct_get_batch(cursor, 1)
        return messages[0][1] if messages and messages[0][0] == cursor else None

    async def read(
        self, after_cursor: int, *, max_messages: int, wait_ms: int
    ) -> tuple[list[AnyFeedMessage], int]:
        """Up to `max_messages` messages after `after_cursor`, waiting up to
        `wait_ms` for the first; and the cursor they reach (unreadable
        messages are skipped, but count as read)."""
        assert after_cursor >= 0 and max_messages >= 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        poll_ms = _POLL_MIN_MS
        while True:
            batch = await self._direct_get_batch(after_cursor + 1, max_messages)
            if batch:
                through = batch[-1][0]
                return [message for _, message in batch if message is not None], through
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return [], after_cursor
            await asyncio.sleep(min(poll_ms / 1000, remaining_s))
            poll_ms = min(poll_ms * 2, _POLL_MAX_MS)

    async def iterate(self, after_cursor: int) -> AsyncIterator[AnyFeedMessage]:
        """Pushed by an ordered consumer (the server streams with flow
        control: ~5x the rate of batched direct gets on a loaded machine).
        A gap or a repeat in the sequence restarts it from the next cursor
        due, so the order is exact whatever happens on the way."""
        next_cursor = after_cursor + 1
        while True:
            queue: asyncio.Queue[tuple[int, AnyFeedMessage | None]] = asyncio.Queue(
                ITERATE_BUFFER_MESSAGES
            )
            try:
                subscription = await self._follow(next_cursor, queue)
            except (nats.errors.Error, OSError) as err:
                log.warning("%s: cannot subscribe: %r", self.stream, err)
                await asyncio.sleep(0.5)
                continue
            try:
                while True:
                    seq, message = await queue.get()
                    if seq != next_cursor:
                        log.warning(
                            "%s: got cursor %d, expected %d: resubscribing",
                            self.stream,
                            seq,
                            next_cursor,
                        )
                        break
                    next_cursor += 1
                    if message is not None:
                        yield message
            finally:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await subscription.unsubscribe()

    async def _follow(
        self, start_cursor: int, queue: asyncio.Queue[tuple[int, AnyFeedMessage | None]]
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            await queue.put((seq, self._decode(seq, msg.data)))

        return await self._nc.jetstream().subscribe(
            f"feed.{self._producer}.>",
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_cursor
            ),
            pending_msgs_limit=ITERATE_PENDING_MESSAGES,
            pending_bytes_limit=ITERATE_PENDING_BYTES,
        )

    async def _direct_get_batch(
        self, from_cursor: int, max_messages: int
    ) -> list[tuple[int, AnyFeedMessage | None]]:
        """(cursor, message or None if unreadable), contiguous from `from_cursor`."""
        inbox = self._nc.new_inbox()
        body = {"seq": from_cursor, "batch": max_messages, "max_bytes": self._read_max_bytes}
        try:
            sub = await self._nc.subscribe(inbox)
        except (nats.errors.Error, OSError) as err:
            raise FeedUnavailable(f"{self.stream}: read: {err!r}") from err
        found: list[tuple[int, AnyFeedMessage | None]] = []
        try:
            try:
                await self._nc.publish(
                    f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(body).encode(), reply=inbox
                )
            except (nats.errors.Error, OSError) as err:
                raise FeedUnavailable(f"{self.stream}: read: {err!r}") from err
            expected = from_cursor
            while len(found) < max_messages:
                try:
                    msg = await sub.next_msg(timeout=self._api_timeout_s)
                except nats.errors.TimeoutError:
                    break
                headers = msg.headers or {}
                if "Status" in headers:
                    break  # 204 end of batch, 404 nothing there yet, or an error
                seq = int(headers.get("Nats-Sequence", "0"))
                if seq != expected:
                    break  # a lost response: stop at the gap, read it again later
                expected += 1
                found.append((seq, self._decode(seq, msg.data)))
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
        return found

    def _decode(self, seq: int, data: bytes) -> AnyFeedMessage | None:
        try:
            message = decode_message(data)
        except msgspec.MsgspecError as err:
            self.malformed += 1
            log.error("%s: message %d skipped, unreadable: %s", self.stream, seq, err)
            return None
        if message.producer != self._producer or message.cursor != seq:
            self.malformed += 1
            log.error(
                "%s: message %d skipped: it says producer %r cursor %d",
                self.stream,
                seq,
                message.producer,
                message.cursor,
            )
            return None
        return message

    async def publish(self, messages: Sequence[AnyFeedMessage]) -> None:
        """Append messages whose cursors continue the stream, pipelined
        (`PUBLISH_WINDOW` in flight); all acknowledged (stored on a quorum)
        when this returns. A message without an ack is sent again with the
        ones after it: the stream de-duplicates by message id, so a message
        stored twice over is stored once."""
        pending = list(messages)
        failures = 0
        while pending:
            window = pending[:PUBLISH_WINDOW]
            acks = await asyncio.gather(
                *(self._publish_one(message) for message in window), return_exceptions=True
            )
            failed = next((i for i, ack in enumerate(acks) if isinstance(ack, BaseException)), None)
            if failed is None:
                pending = pending[len(window) :]
                failures = 0
                continue
            failures += 1
            error = acks[failed]
            if failures >= PUBLISH_ATTEMPTS:
                raise FeedPublishRefused(
                    f"{self.stream}: cursor {window[failed].cursor}: {error!r}"
                )
            log.info(
                "%s: cursor %d not acknowledged (%r): again",
                self.stream,
                window[failed].cursor,
                error,
            )
            pending = pending[failed:]
            await asyncio.sleep(PUBLISH_RETRY_PAUSE_S * failures)

    async def _publish_one(self, message: AnyFeedMessage) -> None:
        assert message.producer == self._producer
        headers = {
            "Nats-Expected-Last-Sequence": str(message.cursor - 1),
            "Nats-Msg-Id": message.message_id,
        }
        reply = await request(
            self._nc,
            message_subject(message),
            encode_message(message),
            timeout_s=self._api_timeout_s,
            headers=headers,
        )
        ack = json.loads(reply.data)
        if "error" in ack:
            raise FeedPublishRefused(str(ack["error"]))
        if int(ack.get("seq", -1)) != message.cursor:
            raise FeedPublishRefused(f"stored at {ack.get('seq')}, not {message.cursor}")
