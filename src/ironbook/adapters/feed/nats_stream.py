"""A producer's feed, durable in JetStream: stream `FEED_<producer>`.

The stream holds FRAMES: one JetStream message is a JSON array of feed
messages (`messages.encode_message` shape) with contiguous cursors; a bare
JSON object is a frame of one message (the format of streams written before
frames, still read). The contract for anyone publishing into it (the
simulator, or an external provider's bridge):

- a frame is published on `feed.<producer>.result.frame` if it holds results
  (`bet_settlement`, `rollback_bet_settlement`, `bet_cancel`) and only those,
  else on `feed.<producer>.market.frame` (it then holds no result);
- cursors are per feed message, strictly increasing and contiguous across
  frames: a frame carries the run after the previous frame's last cursor;
- publish with `Nats-Expected-Last-Sequence: <stream sequence of the previous
  frame>` and `Nats-Msg-Id: <producer>:<first cursor of the frame>`, so a
  retried frame is stored once and two publishers can never interleave;
- nothing is ever deleted (R3, file storage), so any cursor can be recovered:
  the frame holding it is found by a binary search over stream sequences
  (direct gets, ~log2(frames) round trips).

A frame that does not decode, mixes producers, has a gap in its cursors or
sits on the wrong subject is skipped whole by every reader, and logged.
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
    StreamConfig,
)

from ironbook.adapters.feed.messages import (
    AnyFeedMessage,
    ResultMessage,
    encode_message,
)
from ironbook.adapters.feed.provider import FeedUnavailable
from ironbook.adapters.nats.provision import (
    DirectGetFailed,
    append_only_stream,
    direct_get_batch,
    ensure_stream,
    request,
)

log = logging.getLogger("ironbook.feed.stream")

DEFAULT_API_TIMEOUT_MS = 2_000
DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024
DUPLICATE_WINDOW_S = 120
PUBLISH_WINDOW = 64
"""Frames in flight while publishing."""
FRAME_MAX_MESSAGES = 1_000
FRAME_MAX_BYTES = 64 * 1024
READ_MAX_FRAMES = 1_000
PUBLISH_ATTEMPTS = 5
PUBLISH_RETRY_PAUSE_S = 0.2
ITERATE_BUFFER_FRAMES = 1_000
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
    return append_only_stream(
        feed_stream_name(producer),
        [f"feed.{producer}.>"],
        replicas=replicas,
        duplicate_window_s=DUPLICATE_WINDOW_S,
    )


class FeedFrameError(ValueError):
    """A stream message that is not a valid frame of this producer's feed."""


_frame_decoder: msgspec.json.Decoder[list[AnyFeedMessage] | AnyFeedMessage] = msgspec.json.Decoder(
    list[AnyFeedMessage] | AnyFeedMessage
)


def frame_subject(producer: str, *, results: bool) -> str:
    return f"feed.{producer}.{'result' if results else 'market'}.frame"


def decode_frame(producer: str, subject: str, data: bytes) -> list[AnyFeedMessage]:
    """The messages of one frame, checked: the producer's, contiguous
    cursors, results exactly on a result subject. Raises `FeedFrameError`."""
    try:
        decoded = _frame_decoder.decode(data)
    except msgspec.MsgspecError as err:
        raise FeedFrameError(f"unreadable: {err}") from err
    messages = decoded if isinstance(decoded, list) else [decoded]
    if not messages:
        raise FeedFrameError("empty frame")
    on_result_subject = subject.startswith(f"feed.{producer}.result.")
    first = messages[0].cursor
    for i, message in enumerate(messages):
        if message.producer != producer:
            raise FeedFrameError(f"cursor {message.cursor} is from producer {message.producer!r}")
        if message.cursor != first + i:
            raise FeedFrameError(f"cursor {message.cursor} after {first + i - 1}: not contiguous")
        if isinstance(message, ResultMessage) != on_result_subject:
            raise FeedFrameError(f"cursor {message.cursor} ({type(message).__name__}) on {subject}")
    return messages


def encode_frames(
    messages: Sequence[AnyFeedMessage],
    *,
    max_messages: int = FRAME_MAX_MESSAGES,
    max_bytes: int = FRAME_MAX_BYTES,
) -> list[tuple[str, bytes, list[AnyFeedMessage]]]:
    """(subject, payload, messages) per frame: runs of contiguous messages,
    cut where results start or stop, at `max_messages` or about `max_bytes`."""
    frames: list[tuple[str, bytes, list[AnyFeedMessage]]] = []
    run: list[AnyFeedMessage] = []
    parts: list[bytes] = []
    size = 0
    results = False

    def close() -> None:
        if run:
            subject = frame_subject(run[0].producer, results=results)
            frames.append((subject, b"[" + b",".join(parts) + b"]", list(run)))
            run.clear()
            parts.clear()

    for message in messages:
        encoded = encode_message(message)
        is_result = isinstance(message, ResultMessage)
        if run and (
            is_result != results or len(run) >= max_messages or size + len(encoded) + 1 > max_bytes
        ):
            close()
        if not run:
            results, size = is_result, 2
        run.append(message)
        parts.append(encoded)
        size += len(encoded) + 1
    close()
    return frames


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
        """Frames skipped because they are not valid frames."""
        self._hint: tuple[int, int, int] | None = None
        """(seq, first, last): the frame at stream sequence `seq` holds cursors
        `first`..`last` (none if last < first: a skipped frame after `last`),
        and the next cursors are in frames after it (a fact of an append-only
        stream, kept to skip the search of `_locate`)."""
        self._tail: tuple[int, int] | None = None
        """The publisher's view: (stream sequence, last cursor) of the newest frame."""

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

    async def _tail_frame(self) -> tuple[int, int]:
        """(the stream's last sequence, the last cursor of its newest
        readable frame); (0, 0) for an empty stream. A publisher appends
        after that sequence and that cursor (unreadable frames at the tail
        hold no cursor)."""
        state = await self._info()
        first_seq, last_seq = int(state["first_seq"]), int(state["last_seq"])
        seq = last_seq
        while seq >= max(first_seq, 1):
            frame = await self._frame_at(seq)
            if frame is not None:
                return last_seq, frame[-1].cursor
            seq -= 1
        return last_seq, 0

    async def tail_cursor(self) -> int:
        """The newest message's cursor, from the stream leader."""
        return (await self._tail_frame())[1]

    async def first_cursor(self) -> int:
        """The oldest message kept (1 unless someone trimmed the stream)."""
        state = await self._info()
        seq, last_seq = int(state["first_seq"]), int(state["last_seq"])
        while 1 <= seq <= last_seq:
            frame = await self._frame_at(seq)
            if frame is not None:
                return frame[0].cursor
            seq += 1
        return 0

    async def get(self, cursor: int) -> AnyFeedMessage | None:
        """The message at `cursor`; None if there is none or it is unreadable."""
        seq = await self._locate(cursor)
        while True:  # the first readable frame from there (unreadable ones are skipped)
            frames = await self._direct_get_batch(seq, 16)
            for _, frame in frames:
                if frame is not None:
                    return next((m for m in frame if m.cursor == cursor), None)
            if not frames:
                return None
            seq = frames[-1][0] + 1

    async def _frame_at(self, seq: int) -> list[AnyFeedMessage] | None:
        frames = await self._direct_get_batch(seq, 1)
        return frames[0][1] if frames and frames[0][0] == seq else None

    async def _locate(self, cursor: int) -> int:
        """The stream sequence of the first frame holding a cursor >= `cursor`
        (the tail's sequence + 1 if there is none yet): a binary search with
        one direct get per step (and one per unreadable frame met)."""
        hint = self._hint
        if hint is not None:
            seq, first, last = hint
            if first <= cursor <= last:
                return seq
            if cursor == last + 1:
                return seq + 1
        state = await self._info()
        lo, hi = max(int(state["first_seq"]), 1), int(state["last_seq"]) + 1
        if cursor <= 1:
            return lo
        while lo < hi:
            mid = (lo + hi) // 2
            probe, frame = mid, None
            while probe < hi:
                frame = await self._frame_at(probe)
                if frame is not None:
                    break
                probe += 1
            if frame is None:
                hi = mid  # [mid, hi) unreadable: starting before them is as good
            elif frame[-1].cursor >= cursor:
                hi = probe
            else:
                lo = probe + 1
        return lo

    async def read(
        self, after_cursor: int, *, max_messages: int, wait_ms: int
    ) -> tuple[list[AnyFeedMessage], int]:
        """Up to `max_messages` messages after `after_cursor`, waiting up to
        `wait_ms` for the first; and the cursor they reach (messages of
        unreadable frames are skipped)."""
        assert after_cursor >= 0 and max_messages >= 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        poll_ms = _POLL_MIN_MS
        while True:
            seq = await self._locate(after_cursor + 1)
            frames = await self._direct_get_batch(seq, min(max_messages, READ_MAX_FRAMES))
            found: list[AnyFeedMessage] = []
            through = after_cursor
            for frame_seq, frame in frames:
                complete = True
                self._hint = (
                    (frame_seq, frame[0].cursor, frame[-1].cursor)
                    if frame is not None
                    else (frame_seq, through + 1, through)
                )
                for message in frame or ():
                    if message.cursor <= through:
                        continue
                    if len(found) >= max_messages:
                        complete = False
                        break
                    found.append(message)
                    through = message.cursor
                if not complete:
                    break
            if found:
                return found, through
            if frames:
                continue  # only unreadable frames (or ones already read): on past them
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return [], after_cursor
            await asyncio.sleep(min(poll_ms / 1000, remaining_s))
            poll_ms = min(poll_ms * 2, _POLL_MAX_MS)

    async def iterate(self, after_cursor: int) -> AsyncIterator[AnyFeedMessage]:
        """Pushed by an ordered consumer (the server streams with flow
        control: ~5x the rate of batched direct gets on a loaded machine),
        starting at the frame that holds `after_cursor + 1`. A gap or a
        repeat in the stream sequence restarts it from the next frame due,
        so the order is exact whatever happens on the way; cursors at or
        below the last one yielded are never yielded again."""
        last = after_cursor
        next_seq: int | None = None
        while True:
            queue: asyncio.Queue[tuple[int, list[AnyFeedMessage] | None]] = asyncio.Queue(
                ITERATE_BUFFER_FRAMES
            )
            try:
                if next_seq is None:
                    next_seq = await self._locate(last + 1)
                subscription = await self._follow(next_seq, queue)
            except (nats.errors.Error, OSError, FeedUnavailable) as err:
                log.warning("%s: cannot subscribe: %r", self.stream, err)
                await asyncio.sleep(0.5)
                continue
            try:
                while True:
                    seq, frame = await queue.get()
                    if seq != next_seq:
                        log.warning(
                            "%s: got frame %d, expected %d: resubscribing",
                            self.stream,
                            seq,
                            next_seq,
                        )
                        break
                    next_seq += 1
                    for message in frame or ():
                        if message.cursor > last:
                            last = message.cursor
                            yield message
            finally:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await subscription.unsubscribe()

    async def _follow(
        self, start_seq: int, queue: asyncio.Queue[tuple[int, list[AnyFeedMessage] | None]]
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            await queue.put((seq, self._decode(seq, msg.subject, msg.data)))

        return await self._nc.jetstream().subscribe(
            f"feed.{self._producer}.>",
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            ),
            pending_msgs_limit=ITERATE_PENDING_MESSAGES,
            pending_bytes_limit=ITERATE_PENDING_BYTES,
        )

    async def _direct_get_batch(
        self, from_seq: int, max_frames: int
    ) -> list[tuple[int, list[AnyFeedMessage] | None]]:
        """(stream sequence, frame or None if invalid), contiguous from `from_seq`
        (`provision.direct_get_batch`)."""
        try:
            messages = await direct_get_batch(
                self._nc,
                self.stream,
                from_seq,
                max_frames,
                max_bytes=self._read_max_bytes,
                timeout_s=self._api_timeout_s,
            )
        except DirectGetFailed as err:
            raise FeedUnavailable(str(err)) from err
        found: list[tuple[int, list[AnyFeedMessage] | None]] = []
        for msg in messages:
            headers = msg.headers or {}
            seq = int(headers["Nats-Sequence"])
            found.append((seq, self._decode(seq, headers.get("Nats-Subject", ""), msg.data)))
        return found

    def _decode(self, seq: int, subject: str, data: bytes) -> list[AnyFeedMessage] | None:
        try:
            return decode_frame(self._producer, subject, data)
        except FeedFrameError as err:
            self.malformed += 1
            log.error("%s: frame %d (%s) skipped: %s", self.stream, seq, subject, err)
            return None

    async def publish(self, messages: Sequence[AnyFeedMessage]) -> None:
        """Append messages whose cursors continue the stream, packed into
        frames (`encode_frames`), pipelined (`PUBLISH_WINDOW` frames in
        flight); all acknowledged (stored on a quorum) when this returns.

        After a frame without an ack (or refused), the stream's tail is read
        again: the frames it holds already (stored, the ack lost) are
        dropped, the rest sent again after it. Messages at or below the
        tail's cursor are taken as stored already (a retry). Raises
        `FeedPublishRefused` if the cursors leave a gap after the tail or
        overlap a frame another publisher stored, or after
        `PUBLISH_ATTEMPTS` failures in a row."""
        if not messages:
            return
        for i, message in enumerate(messages):
            assert message.producer == self._producer
            assert message.cursor == messages[0].cursor + i, "cursors must be contiguous"
        if self._tail is None:
            self._tail = await self._tail_frame()
        tail_cursor = self._tail[1]
        if messages[-1].cursor <= tail_cursor:
            return  # stored already (a retry after a lost acknowledgement)
        if messages[0].cursor <= tail_cursor:
            messages = messages[tail_cursor - messages[0].cursor + 1 :]
        # (first cursor, last cursor, subject, payload) per frame
        pending = [
            (frame[0].cursor, frame[-1].cursor, subject, payload)
            for subject, payload, frame in encode_frames(messages)
        ]
        failures = 0
        while pending:
            tail_seq, tail_cursor = self._tail
            if pending[0][0] != tail_cursor + 1:
                self._tail = None
                raise FeedPublishRefused(
                    f"{self.stream}: frame from cursor {pending[0][0]} does not follow "
                    f"the tail's cursor {tail_cursor}"
                )
            window = pending[:PUBLISH_WINDOW]
            async with asyncio.TaskGroup() as group:
                attempts = [
                    group.create_task(
                        self._try_publish_frame(tail_seq + 1 + i, subject, payload, first)
                    )
                    for i, (first, _, subject, payload) in enumerate(window)
                ]
            acks = [attempt.result() for attempt in attempts]
            failed = next((i for i, ack in enumerate(acks) if ack is not None), None)
            if failed is None:
                self._tail = (tail_seq + len(window), window[-1][1])
                pending = pending[len(window) :]
                failures = 0
                continue
            failures += 1
            error = acks[failed]
            if failures >= PUBLISH_ATTEMPTS:
                self._tail = None
                raise FeedPublishRefused(
                    f"{self.stream}: frame from cursor {window[failed][0]}: {error!r}"
                )
            log.info(
                "%s: frame from cursor %d not acknowledged (%r): again after the tail",
                self.stream,
                window[failed][0],
                error,
            )
            await asyncio.sleep(PUBLISH_RETRY_PAUSE_S * failures)
            try:
                self._tail = await self._tail_frame()
            except FeedUnavailable as err:
                log.info("%s: tail unknown (%r): again", self.stream, err)
                self._tail = (
                    (tail_seq + failed, window[failed - 1][1])
                    if failed
                    else (
                        tail_seq,
                        tail_cursor,
                    )
                )
                continue
            stored_through = self._tail[1]
            pending = [frame for frame in pending if frame[1] > stored_through]

    async def _try_publish_frame(
        self, seq: int, subject: str, payload: bytes, first_cursor: int
    ) -> Exception | None:
        """`_publish_frame`'s failure as a value: one frame's refusal must not
        cancel the others of its window, whose acknowledgements decide what
        the tail is."""
        try:
            await self._publish_frame(seq, subject, payload, first_cursor)
        except Exception as error:
            return error
        return None

    async def _publish_frame(
        self, seq: int, subject: str, payload: bytes, first_cursor: int
    ) -> None:
        headers = {
            "Nats-Expected-Last-Sequence": str(seq - 1),
            "Nats-Msg-Id": f"{self._producer}:{first_cursor}",
        }
        reply = await request(
            self._nc, subject, payload, timeout_s=self._api_timeout_s, headers=headers
        )
        ack = json.loads(reply.data)
        if "error" in ack:
            raise FeedPublishRefused(str(ack["error"]))
        if int(ack.get("seq", -1)) != seq:
            raise FeedPublishRefused(f"stored at {ack.get('seq')}, not {seq}")
