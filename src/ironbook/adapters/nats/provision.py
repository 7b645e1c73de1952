"""Connecting to NATS and creating the JetStream assets ironbook needs.

Creating a replicated stream right after a burst of traffic, or while the
cluster is still forming, can fail with `10005 no suitable peers for
placement` or time out: those are retried, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from ironbook.adapters.nats.security import NatsCredentials, inbox_prefix
from ironbook.replication.concurrency import wait_for

log = logging.getLogger(__name__)
security_log = logging.getLogger("ironbook.security")
PERMISSIONS_VIOLATION = "permissions violation"


class _TlsEofNoise(logging.Filter):
    """nats-py's protocol asks to keep a half-closed connection open, which a
    TLS transport cannot do: asyncio warns about it on every close of a TLS
    connection to NATS. Nothing is wrong; the warning is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_TlsEofNoise())

T = TypeVar("T")

# err_code values from the server's errors.json.
ERR_NO_SUITABLE_PEERS = 10005
ERR_JETSTREAM_UNAVAILABLE = 10008
ERR_STREAM_NAME_IN_USE = 10058
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_CONSTANT = 10164
_RETRYABLE_CODES = {ERR_NO_SUITABLE_PEERS, ERR_JETSTREAM_UNAVAILABLE}

DEFAULT_PROVISION_ATTEMPTS = 20
DEFAULT_PROVISION_BACKOFF_MS = 100
_MAX_BACKOFF_MS = 2000


_CANCEL_AGAIN_S = 0.1
"""How often a connect attempt past its time is cancelled again (`NatsEndpoint.connect`)."""
FLUSH_TIMEOUT_S = 1.0
DRAIN_TIMEOUT_S = 2.0


async def connect_nats(
    servers: str | Sequence[str],
    *,
    credentials: NatsCredentials | None = None,
    name: str = "ironbook",
    connect_timeout_ms: int = 2000,
    ping_interval_ms: int = 1000,
    in_order: bool = False,
) -> NatsClient:
    """A connection that fails over between the given servers forever.

    `in_order`: try the servers in the order given (the first that answers
    wins, and so on at every reconnect), rather than shuffled: a client of a
    DR pair lists the primary site first and reaches the other only when no
    server of the first answers.

    A server going into lame-duck mode (`ironbook drain`, a rolling restart)
    says so; the connection then moves to another server at once, while the
    one it leaves still routes, rather than when that server stops. Requests
    in flight when a connection drops end at once (`request`).

    Pings every second with two outstanding allowed, so a frozen (SIGSTOPped)
    or cut-off server is given up on in about three seconds; a killed one at
    once.

    `flush_timeout` bounds the forced flush nats-py does when more than 2 MB
    are waiting to be written. Without it (nats-py's default is no bound) a
    connection whose TCP peer went silent (a network partition: packets
    dropped, no reset) blocks every publish *and the ping task* forever, so
    the stale connection is never detected: a partitioned leader froze that
    way in a demo run. `drain_timeout` bounds a graceful close the same way.

    `credentials`: mutual TLS and the identity's nkey (a secured cluster
    refuses a connection without them); replies then arrive on the
    identity's own inbox prefix, the only one its allow-list names.
    """
    urls = servers.split(",") if isinstance(servers, str) else list(servers)
    secured: dict[str, Any] = {}
    if credentials is not None:
        secured = {
            "tls": credentials.ssl_context(),
            "nkeys_seed": str(credentials.seed_file),
            "inbox_prefix": inbox_prefix(credentials.identity),
        }

    async def on_error(err: Exception) -> None:
        if PERMISSIONS_VIOLATION in str(err).lower():
            # Something this identity may not do: a bug or an intrusion.
            security_log.warning("nats refused %s: %s", name, err)
            return
        log.debug("nats connection error: %r", err)

    link = _Link()

    async def on_disconnected() -> None:
        log.debug("nats disconnected")
        link.dropped()

    async def on_reconnected() -> None:
        log.debug("nats reconnected")

    async def on_lame_duck() -> None:  # never on the first connect: `nc` is set by then
        log.info("%s: the nats server is in lame-duck mode; moving to another", name)
        await nc.force_reconnect()

    nc = await nats.connect(
        servers=urls,
        name=name,
        connect_timeout=max(1, connect_timeout_ms // 1000),
        reconnect_time_wait=0.1,  # seconds
        max_reconnect_attempts=-1,
        dont_randomize=in_order,
        ping_interval=max(1, ping_interval_ms // 1000),
        max_outstanding_pings=2,
        flush_timeout=FLUSH_TIMEOUT_S,
        drain_timeout=DRAIN_TIMEOUT_S,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        lame_duck_mode_cb=on_lame_duck,
        **secured,
    )
    _LINKS[nc] = link
    return nc


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """A cluster and who connects to it: its URLs (comma-separated) and an
    identity's credentials (None: a plaintext cluster)."""

    url: str
    credentials: NatsCredentials | None = None
    in_order: bool = False
    """Try the URLs in order (see `connect_nats`), not shuffled."""

    async def connect(self, name: str, within_s: float | None = None) -> NatsClient:
        """A connection (`connect_nats`). With `within_s`: `TimeoutError` if
        no server answered by then. nats-py's first connect retries forever
        when no server answers, and one cancellation can be lost in it (a
        refused connection racing the cancel inside its `wait_for`), so the
        attempt is cancelled again until it has ended."""
        connecting = connect_nats(
            self.url, credentials=self.credentials, name=name, in_order=self.in_order
        )
        if within_s is None:
            return await connecting
        async with asyncio.TaskGroup() as group:
            attempt = group.create_task(connecting)
            await asyncio.wait({attempt}, timeout=within_s)
            while not attempt.done():
                attempt.cancel()
                await asyncio.wait({attempt}, timeout=_CANCEL_AGAIN_S)
        if attempt.cancelled():
            raise TimeoutError(f"no server of {self.url} answered within {within_s:g} s")
        return attempt.result()


async def close_nats(nc: NatsClient) -> None:
    """Close a connection; a server that is already gone is not an error
    (nats-py raises ConnectionResetError when it cannot flush on close)."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.close()


class RequestDropped(nats.errors.Error):
    """The connection dropped (its server stopped, or went into lame-duck
    mode and the connection moved) while a request was in flight: the answer,
    if any, was sent to a connection that is gone, so waiting for it is
    waiting for the timeout. Whether the request took effect is unknown,
    as after a timeout."""


class _Link:
    """Whether a `connect_nats` connection dropped since a request was
    sent: `current` is resolved when it drops, then replaced."""

    def __init__(self) -> None:
        self.current: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def dropped(self) -> None:
        self.current.set_result(None)
        self.current = asyncio.get_running_loop().create_future()


_LINKS: weakref.WeakKeyDictionary[NatsClient, _Link] = weakref.WeakKeyDictionary()


async def _settled(call: Awaitable[T]) -> T | Exception:
    try:
        return await call
    except Exception as err:
        return err


async def request_once(
    nc: NatsClient,
    subject: str,
    payload: bytes,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """`nc.request`, ended with `RequestDropped` as soon as a `connect_nats`
    connection drops: nats-py would wait out the timeout (the ledger
    leader's append timeout is 2 s) although no answer can come any more,
    and every write of the partition waits behind that append."""
    link = _LINKS.get(nc)
    call = nc.request(subject, payload, timeout=timeout_s, headers=headers)
    if link is None:
        return await call
    dropped = link.current
    async with asyncio.TaskGroup() as tasks:
        answer = tasks.create_task(_settled(call))
        await asyncio.wait((answer, dropped), return_when=asyncio.FIRST_COMPLETED)
        answer.cancel()  # nothing if it is done
    if answer.cancelled():
        raise RequestDropped(f"{subject}: the connection dropped with the request in flight")
    outcome = answer.result()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


NO_RESPONDERS_ATTEMPTS = 10
_NO_RESPONDERS_BACKOFF_MS = 10
_NO_RESPONDERS_MAX_BACKOFF_MS = 400


async def request(
    nc: NatsClient,
    subject: str,
    payload: bytes,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """`nc.request`, retried (10 tries over ~2 s) on "no responders".

    No responders means no server took the message, so a retry cannot
    duplicate it. It happens for a moment after a stream is created or moves:
    the server we are connected to does not know yet who serves the subject.
    """
    delay_ms = _NO_RESPONDERS_BACKOFF_MS
    for attempt in range(1, NO_RESPONDERS_ATTEMPTS + 1):
        try:
            return await request_once(nc, subject, payload, timeout_s=timeout_s, headers=headers)
        except nats.errors.NoRespondersError:
            if attempt == NO_RESPONDERS_ATTEMPTS:
                raise
        await asyncio.sleep(delay_ms / 1000)
        delay_ms = min(delay_ms * 2, _NO_RESPONDERS_MAX_BACKOFF_MS)
    raise AssertionError("unreachable")


def _retryable(err: Exception) -> bool:
    if isinstance(err, nats.js.errors.APIError):
        return err.err_code in _RETRYABLE_CODES
    return isinstance(err, nats.errors.TimeoutError | nats.errors.NoRespondersError)


async def with_placement_retry(
    what: str,
    create: Callable[[], Awaitable[T]],
    *,
    attempts: int = DEFAULT_PROVISION_ATTEMPTS,
    backoff_ms: int = DEFAULT_PROVISION_BACKOFF_MS,
) -> T:
    """Run `create()`, retrying placement failures and API timeouts."""
    assert attempts >= 1
    delay_ms = backoff_ms
    for attempt in range(1, attempts + 1):
        try:
            return await create()
        except Exception as err:
            if attempt == attempts or not _retryable(err):
                raise
            log.info("creating %s failed (%r), attempt %d/%d", what, err, attempt, attempts)
            await asyncio.sleep(delay_ms / 1000)
            delay_ms = min(delay_ms * 2, _MAX_BACKOFF_MS)
    raise AssertionError("unreachable")


async def open_or_create(
    what: str, open_existing: Callable[[], Awaitable[T]], create: Callable[[], Awaitable[T]]
) -> T:
    """The existing asset, else a new one (placement failures retried).

    The existing one is looked up first: a service identity may read the
    assets it uses but not create them (only `ops` may, when the cluster is
    provisioned), so it must never ask to create what is already there.

    The lookup is retried like the creation: after a whole cluster restarts,
    a stream answers nothing (the request times out) until its group has
    elected a leader, and a creation that timed out may have happened, which
    the next attempt's lookup then finds."""

    async def attempt() -> T:
        try:
            return await open_existing()
        except nats.js.errors.NotFoundError:
            return await create()

    return await with_placement_retry(what, attempt)


def append_only_stream(
    name: str, subjects: list[str], *, replicas: int, duplicate_window_s: float = 0
) -> StreamConfig:
    """A record that only grows: on disk, `replicas` copies, no limit and no
    expiry, new messages refused rather than old ones dropped if a limit is
    ever set, and no message may be deleted nor the stream purged (the
    ledger's logs, the feed's, the audit checkpoints and significant events).
    Direct gets let any replica read it. `duplicate_window_s` 0 keeps the
    server's default window (two minutes)."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        discard=DiscardPolicy.NEW,
        duplicate_window=duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Use the stream, or create it.

    An existing stream with another config (made by an older version, or by
    hand) is used as it is, with a warning: changing a live ledger's stream
    is an operator's decision, not a side effect of starting a process.
    """
    assert config.name is not None
    name = config.name
    info = await open_or_create(
        f"stream {name}", lambda: js.stream_info(name), lambda: js.add_stream(config)
    )
    if (info.config.subjects, info.config.num_replicas) != (config.subjects, config.num_replicas):
        log.warning("stream %s exists with a different config; using it as it is", name)
    return info


class DirectGetFailed(Exception):
    """A batched direct get could not be sent (no connection)."""


class BatchInbox:
    """One wildcard inbox subscription per connection for replies of several
    messages (batched direct gets). A subscribe and an unsubscribe for every
    read cost the servers about 0.3 ms of CPU each time (the interest goes out
    over the cluster's routes); a read now only registers a token here.

    It keeps no reference to its connection (it is the value of a table keyed
    weakly by the connection, and the connection refers to it through the
    subscription's callback): a closed, dropped connection frees both."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._subscribed = False
        self._opening = asyncio.Lock()
        self._next_token = 0

    async def open(self, nc: NatsClient) -> None:
        if self._subscribed:
            return
        async with self._opening:
            if not self._subscribed:
                await nc.subscribe(f"{self._prefix}.*", cb=self._route)
                self._subscribed = True

    async def _route(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject[len(self._prefix) + 1 :])
        if queue is not None:  # else a late reply to a read that gave up
            queue.put_nowait(msg)

    @contextlib.contextmanager
    def reply_subject(self) -> Iterator[tuple[str, asyncio.Queue[Msg]]]:
        """A reply subject of this inbox and the queue its messages land in,
        until the block ends."""
        self._next_token += 1
        token = str(self._next_token)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._queues[token] = queue
        try:
            yield f"{self._prefix}.{token}", queue
        finally:
            del self._queues[token]


_BATCH_INBOXES: weakref.WeakKeyDictionary[NatsClient, BatchInbox] = weakref.WeakKeyDictionary()


async def batch_inbox(nc: NatsClient) -> BatchInbox:
    """The connection's `BatchInbox`, subscribed."""
    inbox = _BATCH_INBOXES.get(nc)
    if inbox is None:
        inbox = _BATCH_INBOXES[nc] = BatchInbox(nc.new_inbox())
    await inbox.open(nc)
    return inbox


async def direct_get_batch(
    nc: NatsClient,
    stream: str,
    from_seq: int,
    max_messages: int,
    *,
    max_bytes: int,
    timeout_s: float,
    contiguous: bool = True,
) -> list[Msg]:
    """One batched direct get (`$JS.API.DIRECT.GET.<stream>`): up to
    `max_messages` stored messages from stream sequence `from_seq`, without
    gaps. Any replica may answer, so the result may lag the leader; an
    unanswered request, "nothing there yet" (404) and the end of the batch
    (204) all end the read. Responses stop at the first gap: the stream never
    deletes, so a gap can only be a lost response, read again next time.
    `contiguous=False` reads a stream that may delete (an object store's
    replaced chunks): the server skips deleted sequences, so the batch only
    has to grow, and a lost response is caught by the caller's count.
    Replies come to the connection's `BatchInbox`."""
    request = {"seq": from_seq, "batch": max_messages, "max_bytes": max_bytes}
    try:
        inbox = await batch_inbox(nc)
    except (nats.errors.Error, OSError) as err:
        raise DirectGetFailed(f"{stream}: read: {err!r}") from err
    found: list[Msg] = []
    with inbox.reply_subject() as (reply, replies):
        try:
            await nc.publish(
                f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=reply
            )
        except (nats.errors.Error, OSError) as err:
            raise DirectGetFailed(f"{stream}: read: {err!r}") from err
        expected = from_seq
        while len(found) < max_messages:
            try:
                msg = await wait_for(replies.get(), timeout_s)
            except TimeoutError:
                break
            headers = msg.headers or {}
            if "Status" in headers:
                break  # 204 end of batch, 404 nothing at from_seq yet, or an error
            seq = int(headers.get("Nats-Sequence", "0"))
            if seq != expected and (contiguous or seq < expected):
                break
            expected = seq + 1
            found.append(msg)
    return found
