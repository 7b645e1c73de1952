"""Prometheus metrics of one ledger replica process.

The replica's ports (log, snapshot writer, request server) are wrapped here by
the composition root, so append latency, batch sizes, commands by kind and
outcome and snapshot writes are measured where they cross the process's edge,
without touching the replication logic. Role, term, applied sequence and lag
are sampled from `Replica.status()` and the log's last sequence just before a
scrape answers. `/metrics` is served on a loopback port (see docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence

import msgspec
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

from ironbook.adapters.procfs import memory_limit_bytes
from ironbook.replication.concurrency import wait_for
from ironbook.replication.families import Family
from ironbook.replication.interfaces import (
    InboundRequest,
    Log,
    LogEntry,
    ReplicationError,
    RequestInbox,
    RequestServer,
    Snapshot,
    SnapshotInfo,
    SnapshotWriter,
)
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.replica import ReplicaStatus
from ironbook.services.metrics_http import serve_http

ROLES = ("starting", "follower", "candidate", "leader")
_APPEND_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SNAPSHOT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
_MAX_KINDS = 64
"""Distinct command kinds counted; anything beyond is `other` (a request's
kind comes from its payload, which a client chooses)."""
_MAX_COUNTED_KEYS = 4 * _MAX_KINDS
_OTHER_TAG = b"other"
_tagged = msgspec.msgpack.Decoder(list[msgspec.Raw])
"""Commands and ledger replies are msgpack arrays whose first element is the
type tag: read only the tag, leave the rest undecoded."""
_LAST_SEQ_TIMEOUT_S = 0.5
"""Well under Prometheus's 1 s scrape timeout: a replica whose NATS server is
gone still answers the scrape (without a fresh lag), and is not taken for down."""


def _tag(payload: bytes) -> str | None:
    try:
        items = _tagged.decode(payload)
        return msgspec.msgpack.decode(items[0], type=str) if items else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _head_tag(data: bytes, start: int = 0) -> bytes | None:
    """The type tag of the msgpack array at `data[start:]`, read from its
    first bytes without decoding the rest (the leader counts every command,
    so this runs tens of thousands of times a second); None when the bytes
    do not start an array whose first element is a short string."""
    try:
        head = data[start]
        if 0x90 <= head <= 0x9F:
            at = start + 1
        elif head == 0xDC:
            at = start + 3
        elif head == 0xDD:
            at = start + 5
        else:
            return None
        size = data[at]
        if 0xA0 <= size <= 0xBF:
            return data[at + 1 : at + 1 + size - 0xA0]
        if size == 0xD9:
            return data[at + 2 : at + 2 + data[at + 1]]
    except IndexError:
        return None
    return None


_OUTCOME_PREFIX = b"\x82\xa4type\xa7outcome\xa7outcome"
"""How `replication.wire` encodes an `OutcomeReply` up to its outcome's bytes."""
_BIN_HEADER_BYTES = {0xC4: 2, 0xC5: 3, 0xC6: 5}
_REFUSAL_TAG = b"refusal"


class _ReplyHead(msgspec.Struct):
    """The parts of a `replication.wire` reply (a map) the metrics read."""

    type: str
    outcome: bytes = b""


_reply_head = msgspec.msgpack.Decoder(_ReplyHead)


def _outcome(reply: bytes) -> str:
    """`accepted`, `rejected` (the ledger refused it), `retry` or
    `bad_request`, from a reply as `replication.wire` encodes it."""
    if reply.startswith(_OUTCOME_PREFIX):
        header = _BIN_HEADER_BYTES.get(
            reply[len(_OUTCOME_PREFIX)] if len(reply) > len(_OUTCOME_PREFIX) else -1
        )
        if header is not None:
            tag = _head_tag(reply, len(_OUTCOME_PREFIX) + header)
            if tag is not None:
                return "rejected" if tag == _REFUSAL_TAG else "accepted"
    try:
        head = _reply_head.decode(reply)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "other"
    if head.type != "outcome":
        return head.type if head.type in ("retry", "bad_request") else "other"
    return "rejected" if _tag(head.outcome) == "refusal" else "accepted"


class _CommandCounts:
    """Commands by kind and outcome, counted in a plain dictionary and turned
    into `ironbook_replica_commands_total` only when scraped: a labelled
    prometheus-client counter costs about 1 µs a command under its lock."""

    def __init__(self, partition: str) -> None:
        self._partition = partition
        self.counts: dict[tuple[bytes | None, str], int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ironbook_replica_commands",
            "Commands answered by the leader, by kind and outcome",
            labels=["partition", "kind", "outcome"],
        )
        by_label: dict[tuple[str, str], int] = {}
        kinds: set[str] = set()
        for (tag, outcome), count in list(self.counts.items()):
            kind = _kind(tag)
            if kind not in kinds and len(kinds) >= _MAX_KINDS:
                kind = "other"
            kinds.add(kind)
            by_label[kind, outcome] = by_label.get((kind, outcome), 0) + count
        for (kind, outcome), count in sorted(by_label.items()):
            family.add_metric([self._partition, kind, outcome], count)
        yield family


def _kind(tag: bytes | None) -> str:
    if tag is None:
        return "undecodable"
    try:
        return tag.decode("ascii").split("/")[0]
    except UnicodeDecodeError:
        return "undecodable"


class ReplicaMetrics:
    def __init__(self, partition: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.partition = str(partition)
        labels = ["partition"]
        r = self.registry
        self.role = Gauge(
            "ironbook_replica_role", "1 for the current role", [*labels, "role"], registry=r
        )
        self.term = Gauge(
            "ironbook_replica_term", "Lease revision of the last term", labels, registry=r
        )
        self.applied = Gauge(
            "ironbook_replica_applied_sequence", "Last log entry applied", labels, registry=r
        )
        self.stream_last = Gauge(
            "ironbook_replica_stream_last_sequence",
            "Last sequence of the partition's stream",
            labels,
            registry=r,
        )
        self.lag = Gauge(
            "ironbook_replica_lag_entries", "Log entries not applied yet", labels, registry=r
        )
        self.quarantined = Gauge(
            "ironbook_replica_quarantined_entries",
            "Log entries set aside instead of applied",
            labels,
            registry=r,
        )
        self.append_seconds = Histogram(
            "ironbook_replica_append_seconds",
            "Time to append one batch to the log (until the stream acknowledges it)",
            labels,
            buckets=_APPEND_BUCKETS_S,
            registry=r,
        )
        self.batch_requests = Histogram(
            "ironbook_replica_batch_requests",
            "Requests taken from the inbox at once by the leader",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commands = _CommandCounts(self.partition)
        r.register(self.commands)
        self.snapshot_seconds = Histogram(
            "ironbook_replica_snapshot_seconds",
            "Time to take and store one snapshot (encoding in a child process, upload)",
            labels,
            buckets=_SNAPSHOT_BUCKETS_S,
            registry=r,
        )
        self.snapshot_bytes = Gauge(
            "ironbook_replica_snapshot_bytes",
            "Size of the last snapshot stored",
            labels,
            registry=r,
        )
        self.snapshot_failures = Counter(
            "ironbook_replica_snapshot_failures_total",
            "Snapshots not stored (child failed or timed out, store unreachable); tried later",
            labels,
            registry=r,
        )
        self.memory_limit = Gauge(
            "ironbook_replica_memory_limit_bytes",
            "Memory this replica may use: the least of the machine's, its RLIMIT_AS"
            " and its memory cgroup's limit",
            labels,
            registry=r,
        )
        self.loop_stalled = Counter(
            "ironbook_replica_loop_stalled_seconds",
            "Time the event loop stood still while the process was off the CPU"
            " (stopped, starved or blocked): wake-ups at least 50 ms late, less the CPU used",
            labels,
            registry=r,
        )
        self.loop_stalled.labels(self.partition)  # shown at 0 before the first stall
        self._loop_stalled_counted_s = 0.0
        self.quarantined.labels(self.partition).set(0)
        try:
            limit = memory_limit_bytes()
        except OSError:  # without /proc: no limit shown (not 0), so no forecast against it
            pass
        else:
            self.memory_limit.labels(self.partition).set(limit)
        ProcessCollector(registry=r)

    def log(self, log: Log) -> Log:
        return _MeteredLog(log, self)

    def snapshot_writer(self, writer: SnapshotWriter) -> SnapshotWriter:
        return _MeteredSnapshotWriter(writer, self)

    def server(self, server: RequestServer) -> RequestServer:
        return _MeteredServer(server, self)

    def sample(
        self,
        status: ReplicaStatus,
        stream_last_seq: int | None,
        loop_stalled_s: float | None = None,
    ) -> None:
        """Role, term, applied sequence, when the stream's last sequence
        could be read the lag, and the loop's stalls so far."""
        p = self.partition
        if loop_stalled_s is not None and loop_stalled_s > self._loop_stalled_counted_s:
            self.loop_stalled.labels(p).inc(loop_stalled_s - self._loop_stalled_counted_s)
            self._loop_stalled_counted_s = loop_stalled_s
        for role in ROLES:
            self.role.labels(p, role).set(1 if status.role == role else 0)
        self.term.labels(p).set(status.term)
        self.applied.labels(p).set(status.applied_seq)
        self.quarantined.labels(p).set(status.quarantined)
        if stream_last_seq is not None:
            self.stream_last.labels(p).set(stream_last_seq)
            self.lag.labels(p).set(max(0, stream_last_seq - status.applied_seq))

    def count_command(self, payload: bytes, reply: bytes) -> None:
        key = (_head_tag(payload), _outcome(reply))
        counts = self.commands.counts
        if key not in counts and len(counts) >= _MAX_COUNTED_KEYS:
            key = (_OTHER_TAG, key[1])
        counts[key] = counts.get(key, 0) + 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _MeteredLog:
    def __init__(self, log: Log, metrics: ReplicaMetrics) -> None:
        self._log = log
        self._seconds = metrics.append_seconds.labels(metrics.partition)

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        started = time.perf_counter()
        seq = await self._log.append(
            payload, expected_last_seq=expected_last_seq, batch_id=batch_id
        )
        self._seconds.observe(time.perf_counter() - started)
        return seq

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        return await self._log.read(from_seq, max_entries=max_entries, wait_ms=wait_ms)

    async def last_seq(self) -> int:
        return await self._log.last_seq()


class _MeteredSnapshotWriter:
    def __init__(self, writer: SnapshotWriter, metrics: ReplicaMetrics) -> None:
        self._writer = writer
        self._seconds = metrics.snapshot_seconds.labels(metrics.partition)
        self._bytes = metrics.snapshot_bytes.labels(metrics.partition)
        self._failures = metrics.snapshot_failures.labels(metrics.partition)

    async def write(self, capture: Callable[[], Snapshot], loop_blocks: LoopBlocks) -> SnapshotInfo:
        started = time.perf_counter()
        try:
            written = await self._writer.write(capture, loop_blocks)
        except ReplicationError:
            self._failures.inc()
            raise
        self._seconds.observe(time.perf_counter() - started)
        self._bytes.set(written.size_bytes)
        return written


class _MeteredServer:
    def __init__(self, server: RequestServer, metrics: ReplicaMetrics) -> None:
        self._server = server
        self._metrics = metrics

    async def listen(self) -> RequestInbox:
        return _MeteredInbox(await self._server.listen(), self._metrics)


class _MeteredInbox:
    def __init__(self, inbox: RequestInbox, metrics: ReplicaMetrics) -> None:
        self._inbox = inbox
        self._metrics = metrics
        self._batch = metrics.batch_requests.labels(metrics.partition)

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[InboundRequest]:
        requests = await self._inbox.receive(max_requests, wait_ms=wait_ms)
        if requests:
            self._batch.observe(len(requests))
        return [_MeteredRequest(request, self._metrics) for request in requests]

    async def close(self) -> None:
        await self._inbox.close()


class _MeteredRequest:
    __slots__ = ("_metrics", "_request")

    def __init__(self, request: InboundRequest, metrics: ReplicaMetrics) -> None:
        self._request = request
        self._metrics = metrics

    @property
    def payload(self) -> bytes:
        return self._request.payload

    @property
    def family(self) -> Family:
        return self._request.family

    async def respond(self, payload: bytes) -> None:
        self._metrics.count_command(self._request.payload, payload)
        await self._request.respond(payload)


async def serve_metrics(
    metrics: ReplicaMetrics,
    status: Callable[[], ReplicaStatus],
    log: Log,
    host: str,
    port: int,
    loop_blocks: LoopBlocks | None = None,
) -> asyncio.Server:
    """Answer `GET /metrics` on `host:port` (0: a free port), sampling the
    replica's `status()`, the log's last sequence and the loop's stalls
    (`loop_blocks`) for each scrape."""

    async def render() -> tuple[bytes, str]:
        try:
            last_seq: int | None = await wait_for(log.last_seq(), _LAST_SEQ_TIMEOUT_S)
        except (ReplicationError, TimeoutError):
            last_seq = None
        metrics.sample(status(), last_seq, None if loop_blocks is None else loop_blocks.stalled_s())
        return metrics.exposition(), CONTENT_TYPE_LATEST

    return await serve_http(render, host, port)
