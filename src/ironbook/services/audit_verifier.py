"""The independent verifier: follows `AUDIT_CHECKPOINTS` and checks every
checkpoint against the log it covers.

    python -m ironbook.bootstrap audit-verifier --nats URL[,URL...] --data-dir D

For each new checkpoint of a log (a partition, or `events`), in stream order:

1. its signature, with a public key given to the verifier (`audit.pubkey_file`),
   never one read from the stream;
2. its chain: `previous_size` is the tree size of the log's checkpoint before it;
3. its root against the log: the entries since the previous checkpoint are read
   and added to the tree the verifier keeps (a frontier), and the root at the
   checkpoint's size must be the signed one;
4. the RFC 9162 consistency proof from the previous checkpoint to this one,
   built from those entries and checked as any outside auditor would.

An epoch record (a DR takeover, `replication/audit_epoch.py`) is checked for
its signature and for going on from the last checkpoint verified; the
checkpoints it abandons are set aside before they are reached, and the epoch,
with what it gave up, is logged.

A failure is counted (`ironbook_audit_verify_failures_total`), logged as a
security event, and recorded in the significant-event log; verification goes
on with the next checkpoint. A checkpoint whose entries cannot be read yet is
tried again on the next poll. On start the verifier checks every checkpoint
from the first (its trees are rebuilt from the logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.aio.client import Client as NatsClient
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ironbook.adapters.audit.checkpoint_stream import (
    CHECKPOINT_STREAM,
    read_checkpoint_messages,
)
from ironbook.adapters.audit.events import record_significant_event
from ironbook.adapters.audit.keys import (
    KeyFileError,
    checkpoint_problem,
    epoch_problem,
    load_public_key,
)
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.replication.audit_epoch import EpochStart, decode_record
from ironbook.replication.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    decode_hex,
)
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import LogUnavailable
from ironbook.replication.merkle import (
    Frontier,
    LogName,
    PartialTree,
    leaf_hash,
    log_tag,
    verify_consistency,
)
from ironbook.replication.tree_keeping import CheckpointUnavailable
from ironbook.services.metrics_http import serve_http

log = logging.getLogger("ironbook.audit.verifier")
security_log = logging.getLogger("ironbook.security")

PUBKEY_WAIT_S = 1.0


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.failures = Counter(
            "ironbook_audit_verify_failures",
            "Checkpoints that failed verification (signature, chain, root or consistency)",
            ["log", "check"],
            registry=self.registry,
        )
        self.verified = Counter(
            "ironbook_audit_checkpoints_verified",
            "Checkpoints verified against the log",
            ["log"],
            registry=self.registry,
        )
        self.verified_size = Gauge(
            "ironbook_audit_verified_tree_size",
            "Tree size of the newest checkpoint verified, per log",
            ["log"],
            registry=self.registry,
        )
        self.verified_time = Gauge(
            "ironbook_audit_verified_checkpoint_time_seconds",
            "Signing time (Unix s) of the newest checkpoint verified, per log",
            ["log"],
            registry=self.registry,
        )

    async def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class _Chain:
    """What the verifier holds of one log: the tree up to the last checkpoint."""

    frontier: Frontier = field(default_factory=Frontier)
    last: Checkpoint | None = None


class AuditVerifier:
    def __init__(self, nc: NatsClient, key: Ed25519PublicKey, metrics: VerifierMetrics) -> None:
        self._nc = nc
        self._key = key
        self._metrics = metrics
        self._chains: dict[LogName, _Chain] = {}
        self._next_stream_seq = 1
        self._abandoned: set[tuple[LogName, str]] = set()
        self._epochs: dict[LogName, int] = {}
        """The last epoch accepted per log (1 before any takeover)."""
        self.failures: list[str] = []
        self.epochs: list[str] = []

    async def poll(self) -> int:
        """Verify the checkpoints published since the last poll, in order;
        returns how many were taken (verified or failed). Stops at the first
        whose entries cannot be read yet."""
        try:
            bodies = await read_checkpoint_messages(self._nc, self._next_stream_seq)
        except CheckpointUnavailable as err:
            log.warning("checkpoint stream unreadable: %s", err)
            return 0
        records: list[Checkpoint | EpochStart | CheckpointFormatError] = []
        for body in bodies:
            try:
                records.append(decode_record(body))
            except CheckpointFormatError as err:
                records.append(err)
        # A DR takeover's epoch record follows the checkpoints it abandons:
        # those are set aside before they are reached (`_start_epoch`).
        for record in records:
            if isinstance(record, EpochStart) and epoch_problem(self._key, record) is None:
                self._abandoned |= {(cp.partition, cp.signature) for cp in record.abandoned}
        taken = 0
        for record in records:
            if isinstance(record, CheckpointFormatError):
                # Not a checkpoint at all on the stream: a forgery or corruption.
                where = f"{CHECKPOINT_STREAM} seq {self._next_stream_seq}"
                await self._fail("stream", "format", f"{where}: {record}")
            elif isinstance(record, EpochStart):
                await self._start_epoch(record)
            elif (record.partition, record.signature) in self._abandoned:
                log.warning(
                    "checkpoint of log %s at tree size %d: abandoned by a DR takeover's epoch",
                    record.partition,
                    record.tree_size,
                )
            else:
                try:
                    await self._verify(record)
                except LogUnavailable as err:
                    log.info("checkpoint %s at %d: log not readable yet (%s)",
                             record.partition, record.tree_size, err)  # fmt: skip
                    break
            self._next_stream_seq += 1
            taken += 1
        return taken

    async def _start_epoch(self, record: EpochStart) -> None:
        """A DR takeover: the chain goes on from the record's kept checkpoint."""
        name = record.epoch_of
        where = f"epoch {record.epoch} of log {name}"
        problem = epoch_problem(self._key, record)
        if problem is not None:
            await self._fail(name, "signature", f"{where}: {problem}")
            return
        if record.epoch <= self._epochs.get(name, 1):
            await self._fail(
                name,
                "chain",
                f"{where}: it follows epoch {self._epochs.get(name, 1)} of this log: epochs "
                "only grow",
            )
            return
        chain = self._chains.setdefault(name, _Chain())
        last_size = chain.last.tree_size if chain.last is not None else 0
        if chain.last is not None and chain.last in record.abandoned:
            # Its abandoned checkpoints were verified before the record was
            # read (a lagging read): the tree goes back to the kept one.
            chain.frontier = await self._tree_of(name, record.kept_size)
            chain.last = record.kept
        elif last_size != record.kept_size:
            await self._fail(
                name,
                "chain",
                f"{where}: it goes on from tree size {record.kept_size}, but the last "
                f"checkpoint verified is at tree size {last_size}",
            )
            return
        if await AuditedLog(self._nc, name).last_seq() < record.tree_size:
            await self._fail(
                name,
                "chain",
                f"{where}: it says the log held {record.tree_size} entries at the takeover, "
                "but the log is shorter",
            )
            return
        self._epochs[name] = record.epoch
        self.epochs.append(record.describe())
        log.warning("%s", record.describe())

    async def _tree_of(self, name: LogName, size: int) -> Frontier:
        """The log's tree over its first `size` entries, read again."""
        frontier = Frontier()
        tag = log_tag(name)
        async for entry in read_log(AuditedLog(self._nc, name), 1, size):
            frontier.append(leaf_hash(tag, entry.seq, entry.payload))
        return frontier

    async def _verify(self, checkpoint: Checkpoint) -> None:
        name = checkpoint.partition
        where = f"checkpoint of log {name} at tree size {checkpoint.tree_size}"
        problem = checkpoint_problem(self._key, checkpoint)
        if problem is not None:
            await self._fail(name, "signature", f"{where}: {problem}")
            return
        chain = self._chains.setdefault(name, _Chain())
        previous_size = chain.last.tree_size if chain.last is not None else 0
        if checkpoint.previous_size != previous_size:
            await self._fail(
                name,
                "chain",
                f"{where}: it follows tree size {checkpoint.previous_size}, but the log's "
                f"checkpoint before it is at tree size {previous_size}",
            )
        if checkpoint.tree_size < chain.frontier.size:
            await self._fail(name, "chain", f"{where}: behind a checkpoint already verified")
            return
        audited = AuditedLog(self._nc, name)
        last_seq = await audited.last_seq()
        if last_seq < checkpoint.tree_size:
            await self._fail(
                name,
                "root",
                f"{where}: the log ends at seq {last_seq}: signed entries are missing",
            )
            return
        tag = log_tag(name)
        leaves = [
            leaf_hash(tag, entry.seq, entry.payload)
            async for entry in read_log(audited, chain.frontier.size + 1, checkpoint.tree_size)
        ]
        tree = PartialTree(chain.frontier, leaves)
        root = tree.root(checkpoint.tree_size)
        for leaf in leaves:
            chain.frontier.append(leaf)
        ok = True
        if root.hex() != checkpoint.root:
            ok = False
            await self._fail(
                name,
                "root",
                f"{where}: the log's root at that size differs from the signed root: "
                f"entries {previous_size + 1}..{checkpoint.tree_size} (or the tree before "
                "them) were changed",
            )
        elif chain.last is not None and not self._consistent(tree, chain.last, checkpoint):
            ok = False
            await self._fail(
                name, "consistency", f"{where}: does not extend tree size {previous_size}"
            )
        chain.last = checkpoint
        if ok:
            label = str(name)
            self._metrics.verified.labels(log=label).inc()
            self._metrics.verified_size.labels(log=label).set(checkpoint.tree_size)
            self._metrics.verified_time.labels(log=label).set(checkpoint.time_ms / 1000)

    @staticmethod
    def _consistent(tree: PartialTree, old: Checkpoint, new: Checkpoint) -> bool:
        if old.tree_size == new.tree_size:
            return old.root == new.root
        proof = tree.consistency_proof(old.tree_size, new.tree_size)
        return verify_consistency(
            old.tree_size, new.tree_size, decode_hex(old.root), decode_hex(new.root), proof
        )

    async def _fail(self, name: LogName, check: str, message: str) -> None:
        self.failures.append(message)
        self._metrics.failures.labels(log=str(name), check=check).inc()
        security_log.error(
            json.dumps(
                {
                    "event": "audit_verify_failure",
                    "log": str(name),
                    "check": check,
                    "detail": message,
                }
            )
        )
        await record_significant_event(
            self._nc,
            "audit_verify_failure",
            actor="audit-verifier",
            reason=check,
            target=f"log {name}",
            detail=message,
        )


async def wait_for_public_key(path: Path, stop: asyncio.Event) -> Ed25519PublicKey | None:
    """The key at `path`, once it exists (the first signer writes it); None if stopped."""
    while not stop.is_set():
        try:
            return load_public_key(path)
        except KeyFileError as err:
            log.info("waiting for the public key: %s", err)
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), PUBKEY_WAIT_S)
    return None


async def serve(
    nc: NatsClient,
    pubkey_file: Path,
    *,
    host: str,
    port: int,
    poll_ms: int,
    stop: asyncio.Event,
) -> None:
    metrics = VerifierMetrics()
    server = await serve_http(metrics.exposition, host, port)
    async with server:
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        log.info("serving audit metrics on http://%s:%d/metrics", bound_host, bound_port)
        key = await wait_for_public_key(pubkey_file, stop)
        if key is None:
            return
        verifier = AuditVerifier(nc, key, metrics)
        while not stop.is_set():
            if await verifier.poll():
                continue
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), poll_ms / 1000)
