"""Checkpoints on their own JetStream stream, and their off-site copy.

    stream   AUDIT_CHECKPOINTS (R3, file storage, never deletes or purges)
    subject  audit.checkpoint.<log>   (a partition number, or `events`)
    body     one checkpoint as JSON (`replication/checkpoint.py`), or an
             epoch record after a DR takeover (`replication/audit_epoch.py`)

A leader publishes a log's checkpoint with `Nats-Expected-Last-Subject-Sequence`
set to the stream sequence of the checkpoint it chains to, so two leaders
(one deposed without knowing it yet) never both extend the same checkpoint:
the second is refused and re-reads the chain. Each published checkpoint is
then appended to `checkpoints.jsonl` in the off-site directory (fsynced).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nats.errors
import nats.js.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from ironbook.adapters.audit.archive import CHECKPOINTS_FILE
from ironbook.adapters.audit.keys import PUBKEY_FILE, key_id, public_key_pem, sign_checkpoint
from ironbook.adapters.nats.provision import (
    ERR_WRONG_LAST_SEQUENCE,
    DirectGetFailed,
    append_only_stream,
    direct_get_batch,
    ensure_stream,
)
from ironbook.replication.audit_epoch import (
    Chains,
    EpochStart,
    chains,
    decode_record,
    encode_epoch,
)
from ironbook.replication.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    encode_checkpoint,
)
from ironbook.replication.merkle import LogName
from ironbook.replication.tree_keeping import (
    CheckpointSuperseded,
    CheckpointUnavailable,
    TreeHead,
)

log = logging.getLogger("ironbook.audit")

CHECKPOINT_STREAM = "AUDIT_CHECKPOINTS"
PUBLISH_TIMEOUT_S = 2.0
READ_BATCH = 256
READ_MAX_BYTES = 1024 * 1024
_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


def checkpoint_subject(log_name: LogName) -> str:
    return f"audit.checkpoint.{log_name}"


def checkpoint_stream_config(*, replicas: int) -> StreamConfig:
    return append_only_stream(CHECKPOINT_STREAM, ["audit.checkpoint.>"], replicas=replicas)


async def ensure_checkpoint_stream(nc: NatsClient, *, replicas: int) -> None:
    await ensure_stream(nc.jetstream(), checkpoint_stream_config(replicas=replicas))


def append_lines(path: Path, lines: Sequence[bytes]) -> None:
    """Append and fsync: the lines are kept once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


class NatsCheckpointPort:
    """`tree_keeping.CheckpointPort` for one log: signs with `key`, publishes
    to `AUDIT_CHECKPOINTS` and copies each checkpoint into `offsite_dir`."""

    def __init__(
        self, nc: NatsClient, log_name: LogName, key: Ed25519PrivateKey, offsite_dir: Path
    ) -> None:
        self._nc = nc
        self._log = log_name
        self._key = key
        self._key_id = key_id(key.public_key())
        self._subject = checkpoint_subject(log_name)
        self._offsite = offsite_dir / CHECKPOINTS_FILE
        self._last_stream_seq = 0
        """The stream sequence of the checkpoint the next one chains to."""
        offsite_dir.mkdir(parents=True, exist_ok=True)
        (offsite_dir / PUBKEY_FILE).write_bytes(public_key_pem(key.public_key()))

    @property
    def log(self) -> LogName:
        return self._log

    async def last_signed(self) -> Checkpoint | None:
        try:
            msg = await self._nc.jetstream().get_last_msg(CHECKPOINT_STREAM, self._subject)
        except nats.js.errors.NotFoundError:
            self._last_stream_seq = 0
            return None
        except (nats.errors.Error, OSError) as err:
            raise CheckpointUnavailable(f"{self._subject}: {err!r}") from err
        try:
            record = decode_record(msg.data or b"")
        except CheckpointFormatError as err:
            raise CheckpointUnavailable(
                f"{self._subject}: the last checkpoint is malformed ({err})"
            ) from err
        self._last_stream_seq = msg.seq or 0
        # After a DR takeover the chain goes on from the epoch's kept checkpoint.
        return record.kept if isinstance(record, EpochStart) else record

    async def publish(self, head: TreeHead) -> Checkpoint:
        checkpoint = sign_checkpoint(
            self._key,
            Checkpoint(
                partition=head.log,
                tree_size=head.tree_size,
                root=head.root.hex(),
                time_ms=head.time_ms,
                key_id=self._key_id,
                previous_size=head.previous_size,
            ),
        )
        line = encode_checkpoint(checkpoint)
        try:
            ack = await self._nc.jetstream().publish(
                self._subject,
                line,
                timeout=PUBLISH_TIMEOUT_S,
                stream=CHECKPOINT_STREAM,
                headers={_EXPECTED_LAST_SUBJECT_SEQ: str(self._last_stream_seq)},
            )
        except nats.js.errors.APIError as err:
            if err.err_code == ERR_WRONG_LAST_SEQUENCE:
                raise CheckpointSuperseded(f"{self._subject}: {err.description}") from err
            raise CheckpointUnavailable(f"{self._subject}: {err!r}") from err
        except (nats.errors.Error, OSError) as err:
            # Unknown whether it landed: re-reading the chain tells.
            raise CheckpointSuperseded(f"{self._subject}: publish: {err!r}") from err
        self._last_stream_seq = ack.seq
        try:
            await asyncio.to_thread(append_lines, self._offsite, [line])
        except OSError as err:
            log.error("checkpoint %s at %d not copied off-site: %s", self._log, head.tree_size, err)
        return checkpoint


async def read_checkpoint_messages(
    nc: NatsClient, from_seq: int = 1, *, timeout_s: float = 2.0
) -> list[bytes]:
    """The bodies stored from stream sequence `from_seq` on, in order (fewer
    from a lagging replica; raises `CheckpointUnavailable`)."""
    bodies: list[bytes] = []
    while True:
        try:
            messages = await direct_get_batch(
                nc,
                CHECKPOINT_STREAM,
                from_seq + len(bodies),
                READ_BATCH,
                max_bytes=READ_MAX_BYTES,
                timeout_s=timeout_s,
            )
        except DirectGetFailed as err:
            raise CheckpointUnavailable(str(err)) from err
        bodies += [msg.data for msg in messages]
        if len(messages) < READ_BATCH:
            return bodies


async def read_chains(nc: NatsClient) -> Chains:
    """Every published checkpoint and epoch record, in stream order, with the
    checkpoints an epoch abandoned taken out of the chains. A message that is
    neither raises `CheckpointFormatError` (naming its stream sequence), and
    so does an epoch that does not fit its chain."""
    records: list[Checkpoint | EpochStart] = []
    for seq, body in enumerate(await read_checkpoint_messages(nc), 1):
        try:
            records.append(decode_record(body))
        except CheckpointFormatError as err:
            raise CheckpointFormatError(f"{CHECKPOINT_STREAM} seq {seq}: {err}") from err
    return chains(records)


async def read_checkpoint_stream(nc: NatsClient) -> list[Checkpoint]:
    """The checkpoints that count, in stream order (`read_chains`)."""
    return (await read_chains(nc)).checkpoints


async def publish_epoch(nc: NatsClient, record: EpochStart) -> int:
    """Put a signed epoch record on its log's checkpoint subject, after the
    subject's last message (a signer that published meanwhile makes it fail,
    `CheckpointSuperseded`); returns its stream sequence."""
    subject = checkpoint_subject(record.epoch_of)
    try:
        last = (await nc.jetstream().get_last_msg(CHECKPOINT_STREAM, subject)).seq or 0
    except nats.js.errors.NotFoundError:
        last = 0
    try:
        ack = await nc.jetstream().publish(
            subject,
            encode_epoch(record),
            timeout=PUBLISH_TIMEOUT_S,
            stream=CHECKPOINT_STREAM,
            headers={_EXPECTED_LAST_SUBJECT_SEQ: str(last)},
        )
    except nats.js.errors.APIError as err:
        if err.err_code == ERR_WRONG_LAST_SEQUENCE:
            raise CheckpointSuperseded(f"{subject}: {err.description}") from err
        raise CheckpointUnavailable(f"{subject}: {err!r}") from err
    except (nats.errors.Error, OSError) as err:
        raise CheckpointUnavailable(f"{subject}: publish: {err!r}") from err
    return ack.seq
