"""An audit epoch: where a log's checkpoint chain goes on after a DR takeover.

A promotion (`ironbook dr promote`) makes a mirror the log. The mirror holds
the old primary's entries up to its `tree_size` when it took over; the old
primary may have signed checkpoints past that (its checkpoint stream is
mirrored too, and not always behind its log). Those checkpoints cover
entries the new primary never received: the RPO's loss. They cannot be
deleted (the stream never deletes), and the new primary cannot extend them
(its tree past `tree_size` is another history), so the promotion signs an
epoch record for each log, published on the log's checkpoint subject:

    kept        the last checkpoint at or below `tree_size`: the chain goes
                on from it (None: from nothing)
    abandoned   the checkpoints signed after `kept`, all past `tree_size`:
                no longer part of the chain, and each one still reported

Its signature (Ed25519, the checkpoint key) is over these bytes:

    b"ironbook epoch v1\\x00"          18 bytes, domain separation
    log tag                            4
    epoch                              8, unsigned big-endian
    site                               1 byte length, then ASCII
    tree_size                          8
    origin_size                        8 (the old primary's last seq; 0: unknown)
    time_ms                            8
    key_id                             8
    SHA-256 of the kept and abandoned checkpoints' signatures, in order   32

so dropping, adding or swapping a checkpoint of either list breaks it. A
verifier reads the chain with `chains`: the checkpoints that still count, in
order, and the epochs, each naming the entries it gave up. Pure.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from ironbook.replication.checkpoint import (
    KEY_ID_BYTES,
    SIGNATURE_BYTES,
    Checkpoint,
    CheckpointFormatError,
    decode_checkpoint,
    decode_hex,
    decode_signature,
)
from ironbook.replication.merkle import LogName, log_tag

DOMAIN = b"ironbook epoch v1\x00"
MAX_SITE_BYTES = 32


class EpochStart(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    epoch_of: LogName
    """The log (a partition number, or `"events"`); the field also tells an
    epoch record from a checkpoint on the stream."""
    epoch: int
    site: str
    """The site that became primary."""
    tree_size: int
    """The log's last sequence on the new primary when it took over."""
    origin_size: int
    """The old primary's last sequence, if it answered then (0: unknown)."""
    kept: Checkpoint | None
    abandoned: list[Checkpoint]
    time_ms: int
    key_id: str
    signature: str = ""

    @property
    def kept_size(self) -> int:
        return self.kept.tree_size if self.kept is not None else 0

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (raises `CheckpointFormatError`)."""
        problem = self._inconsistency()
        if problem:
            raise CheckpointFormatError(problem)
        try:
            tag = log_tag(self.epoch_of)
            key_id = decode_hex(self.key_id)
            site = self.site.encode("ascii")
            numbers = [
                n.to_bytes(8, "big")
                for n in (self.epoch, self.tree_size, self.origin_size, self.time_ms)
            ]
        except (ValueError, OverflowError) as err:
            raise CheckpointFormatError(str(err)) from err
        if len(key_id) != KEY_ID_BYTES or not 0 < len(site) <= MAX_SITE_BYTES:
            raise CheckpointFormatError("key_id is 8 bytes in hex, site 1-32 ASCII characters")
        signatures = hashlib.sha256()
        for checkpoint in self.checkpoints():
            signatures.update(checkpoint.signature_bytes())
        epoch, tree_size, origin_size, time_ms = numbers
        return (
            DOMAIN
            + tag
            + epoch
            + len(site).to_bytes(1, "big")
            + site
            + tree_size
            + origin_size
            + time_ms
            + key_id
            + signatures.digest()
        )

    def _inconsistency(self) -> str:
        if self.epoch < 2:
            return "an epoch record starts epoch 2 or later"
        if self.kept is not None and (
            self.kept.partition != self.epoch_of or self.kept.tree_size > self.tree_size
        ):
            return (
                f"the kept checkpoint is not one of log {self.epoch_of} "
                f"at or below {self.tree_size}"
            )
        for checkpoint in self.abandoned:
            if checkpoint.partition != self.epoch_of or checkpoint.tree_size <= self.tree_size:
                return (
                    f"an abandoned checkpoint (tree size {checkpoint.tree_size}) is not one of "
                    f"log {self.epoch_of} past {self.tree_size}"
                )
        return ""

    def checkpoints(self) -> list[Checkpoint]:
        return ([self.kept] if self.kept is not None else []) + self.abandoned

    def signature_bytes(self) -> bytes:
        return decode_signature(self.signature)

    def with_signature(self, signature: bytes) -> EpochStart:
        assert len(signature) == SIGNATURE_BYTES
        return msgspec.structs.replace(self, signature=base64.b64encode(signature).decode())

    def describe(self) -> str:
        """What this epoch gave up, for a verifier's report."""
        head = (
            f"log {self.epoch_of}: epoch {self.epoch} began on site {self.site} at tree size "
            f"{self.tree_size}, chaining on from the checkpoint at {self.kept_size}"
        )
        if self.abandoned:
            last = self.abandoned[-1].tree_size
            head += (
                f"; {len(self.abandoned)} checkpoint(s) signed before it (up to tree size {last}) "
                f"cover seq {self.tree_size + 1}..{last}, which this log does not hold: "
                "acknowledged on the old primary and lost to the recovery point"
            )
        if self.origin_size > self.tree_size:
            head += (
                f"; the old primary held seq {self.tree_size + 1}..{self.origin_size} "
                f"({self.origin_size - self.tree_size} entries) that this log does not"
            )
        return head


def encode_epoch(record: EpochStart) -> bytes:
    return msgspec.json.encode(record)


_epoch_decoder = msgspec.json.Decoder(EpochStart)
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_record(body: bytes) -> Checkpoint | EpochStart:
    """A message of the checkpoint stream: a checkpoint or an epoch record
    (raises `CheckpointFormatError` on anything else)."""
    try:
        keys = _keys_decoder.decode(body)
    except msgspec.DecodeError as err:
        raise CheckpointFormatError(str(err)) from err
    if "epoch_of" not in keys:
        return decode_checkpoint(body)
    try:
        record = _epoch_decoder.decode(body)
    except msgspec.DecodeError as err:
        raise CheckpointFormatError(f"epoch record: {err}") from err
    record.signed_bytes()
    record.signature_bytes()
    return record


@dataclass
class Chains:
    """A checkpoint stream read in order: the checkpoints that still count
    (the abandoned ones taken out) and every epoch record."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    epochs: list[EpochStart] = field(default_factory=list)

    def of(self, log: LogName) -> list[Checkpoint]:
        return [cp for cp in self.checkpoints if cp.partition == log]

    def epochs_of(self, log: LogName) -> list[EpochStart]:
        return [record for record in self.epochs if record.epoch_of == log]


class EpochMismatch(CheckpointFormatError):
    """An epoch record that does not fit the chain it follows."""


def chains(records: Iterable[Checkpoint | EpochStart]) -> Chains:
    """Apply each epoch record to the chain before it: the checkpoints it
    abandons must be exactly those after its kept one, and a log's epochs
    must grow (raises `EpochMismatch`)."""
    result = Chains()
    for record in records:
        if isinstance(record, Checkpoint):
            result.checkpoints.append(record)
            continue
        earlier = result.epochs_of(record.epoch_of)
        if earlier and record.epoch <= earlier[-1].epoch:
            raise EpochMismatch(
                f"epoch {record.epoch} of log {record.epoch_of} follows its epoch "
                f"{earlier[-1].epoch}: epochs only grow"
            )
        chain = result.of(record.epoch_of)
        after = [cp for cp in chain if cp.tree_size > record.kept_size]
        kept = [cp for cp in chain if cp.tree_size == record.kept_size]
        if record.kept is not None and kept[-1:] != [record.kept]:
            raise EpochMismatch(
                f"epoch {record.epoch} of log {record.epoch_of}: its kept checkpoint (tree size "
                f"{record.kept_size}) is not in the chain before it"
            )
        if after != record.abandoned:
            raise EpochMismatch(
                f"epoch {record.epoch} of log {record.epoch_of}: it abandons "
                f"{[cp.tree_size for cp in record.abandoned]}, but the chain before it holds "
                f"{[cp.tree_size for cp in after]} past {record.kept_size}"
            )
        gone = {id(cp) for cp in after}
        result.checkpoints = [cp for cp in result.checkpoints if id(cp) not in gone]
        result.epochs.append(record)
    return result


def epoch_start(
    chain: Sequence[Checkpoint],
    *,
    log: LogName,
    epoch: int,
    site: str,
    tree_size: int,
    origin_size: int,
    time_ms: int,
    key_id: str,
) -> EpochStart:
    """The (unsigned) record for `log`, whose checkpoints so far are `chain`,
    taken over at `tree_size`."""
    kept = [cp for cp in chain if cp.tree_size <= tree_size]
    return EpochStart(
        epoch_of=log,
        epoch=epoch,
        site=site,
        tree_size=tree_size,
        origin_size=origin_size,
        kept=kept[-1] if kept else None,
        abandoned=[cp for cp in chain if cp.tree_size > tree_size],
        time_ms=time_ms,
        key_id=key_id,
    )
