"""The audit archive: a directory anyone can check with only its public key.

    DIR/entries.jsonl      one log entry per line, each log's entries in sequence order:
                           {"partition": 0, "seq": 1, "payload_b64": "..."}
    DIR/checkpoints.jsonl  signed checkpoints (`replication/checkpoint.py`), oldest first
    DIR/frontier.jsonl     for a log whose entries start past sequence 1, the Merkle
                           frontier of everything before (`merkle.Frontier`):
                           {"partition": 0, "tree_size": 1000, "nodes": ["<hex>", ...]}
    DIR/epochs.jsonl       the signed epoch records of DR takeovers, if any
                           (`replication/audit_epoch.py`): where a chain went on
                           from, and the checkpoints it abandoned
    DIR/pubkey             the checkpoint signer's Ed25519 public key (PEM)

`verify_archive` recomputes every log's tree entry by entry and compares it
with each checkpoint as its size is reached. It stops at the first problem and
names where it is. Entries past a log's last checkpoint are reported, never
taken as verified. Each epoch record is checked (its signature and those of
the checkpoints it names; its kept checkpoint in the chain, its abandoned
ones not) and reported with the entries it gave up.
"""

from __future__ import annotations

import base64
import functools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ironbook.adapters.audit.keys import (
    PUBKEY_FILE,
    KeyFileError,
    checkpoint_problem,
    epoch_problem,
    load_public_key,
)
from ironbook.replication.audit_epoch import EpochStart, decode_record, encode_epoch
from ironbook.replication.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    decode_b64,
    decode_checkpoint,
    decode_hex,
    encode_checkpoint,
)
from ironbook.replication.merkle import MAX_SEQ, Frontier, LogName, leaf_hash, log_tag

ENTRIES_FILE = "entries.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
FRONTIER_FILE = "frontier.jsonl"
EPOCHS_FILE = "epochs.jsonl"


class EntryLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    partition: LogName
    seq: int
    payload_b64: str


class FrontierLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    partition: LogName
    tree_size: int
    nodes: list[str]

    def frontier(self) -> Frontier:
        return Frontier(self.tree_size, [decode_hex(node) for node in self.nodes])


def frontier_line(log: LogName, frontier: Frontier) -> FrontierLine:
    return FrontierLine(log, frontier.size, [node.hex() for node in frontier.nodes])


def entry_line(log: LogName, seq: int, payload: bytes) -> EntryLine:
    return EntryLine(log, seq, base64.b64encode(payload).decode())


class ArchiveError(ValueError):
    """A file of the archive that cannot be read as the format says."""


_entry_decoder = msgspec.json.Decoder(EntryLine)
_cached_log_tag = functools.lru_cache(maxsize=1024, typed=True)(log_tag)
_frontier_decoder = msgspec.json.Decoder(FrontierLine)


def decode_entry(line: bytes) -> tuple[EntryLine, bytes, bytes]:
    """(entry, payload, log tag); raises `ArchiveError`."""
    try:
        entry = _entry_decoder.decode(line)
        tag = _cached_log_tag(entry.partition)
        payload = decode_b64(entry.payload_b64)
    except (msgspec.DecodeError, ValueError) as err:
        raise ArchiveError(f"not an entry ({err})") from err
    if not 1 <= entry.seq <= MAX_SEQ:
        raise ArchiveError(f"sequence {entry.seq} is outside 1..{MAX_SEQ}")
    return entry, payload, tag


def read_entries(path: Path) -> Iterator[tuple[int, EntryLine, bytes, bytes]]:
    """(line number, entry, payload, log tag) for each line of an entries file."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield (number, *decode_entry(line))
            except ArchiveError as err:
                raise ArchiveError(f"{ENTRIES_FILE} line {number}: {err}") from err


def read_checkpoints(path: Path) -> list[tuple[int, Checkpoint]]:
    """(line number, checkpoint) for each line; none when the file does not exist."""
    if not path.exists():
        return []
    checkpoints = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            checkpoints.append((number, decode_checkpoint(line)))
        except CheckpointFormatError as err:
            raise ArchiveError(f"{path.name} line {number}: malformed checkpoint ({err})") from err
    return checkpoints


def read_epochs(path: Path) -> list[tuple[int, EpochStart]]:
    """(line number, epoch record) for each line; none when the file does not exist."""
    if not path.exists():
        return []
    epochs = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            record = decode_record(line)
        except CheckpointFormatError as err:
            raise ArchiveError(f"{path.name} line {number}: malformed epoch ({err})") from err
        if not isinstance(record, EpochStart):
            raise ArchiveError(f"{path.name} line {number}: a checkpoint, not an epoch record")
        epochs.append((number, record))
    return epochs


def read_frontiers(path: Path) -> dict[LogName, Frontier]:
    if not path.exists():
        return {}
    frontiers: dict[LogName, Frontier] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            decoded = _frontier_decoder.decode(line)
            log_tag(decoded.partition)
            frontiers[decoded.partition] = decoded.frontier()
        except (msgspec.DecodeError, ValueError) as err:
            raise ArchiveError(f"{FRONTIER_FILE} line {number}: not a frontier ({err})") from err
    return frontiers


class ArchiveWriter:
    """Writes an archive into a directory (made if needed): entries one by one,
    then the checkpoints and frontiers. A context manager."""

    def __init__(self, out: Path, pubkey_pem: bytes) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / PUBKEY_FILE).write_bytes(pubkey_pem)
        self._out = out
        self._encoder = msgspec.json.Encoder()
        self._entries = (out / ENTRIES_FILE).open("wb")

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._entries.close()

    def entry(self, entry: EntryLine) -> None:
        self._entries.write(self._encoder.encode(entry) + b"\n")

    def finish(
        self,
        checkpoints: Iterable[Checkpoint],
        frontiers: Iterable[FrontierLine],
        epochs: Iterable[EpochStart] = (),
    ) -> None:
        self._entries.close()
        (self._out / CHECKPOINTS_FILE).write_bytes(
            b"".join(encode_checkpoint(checkpoint) + b"\n" for checkpoint in checkpoints)
        )
        epoch_lines = [encode_epoch(record) + b"\n" for record in epochs]
        if epoch_lines:
            (self._out / EPOCHS_FILE).write_bytes(b"".join(epoch_lines))
        lines = [self._encoder.encode(line) + b"\n" for line in frontiers]
        if lines:
            (self._out / FRONTIER_FILE).write_bytes(b"".join(lines))


def write_archive(
    out: Path,
    *,
    pubkey_pem: bytes,
    entries: Iterable[EntryLine],
    checkpoints: Iterable[Checkpoint],
    frontiers: Iterable[FrontierLine] = (),
    epochs: Iterable[EpochStart] = (),
) -> None:
    with ArchiveWriter(out, pubkey_pem) as writer:
        for entry in entries:
            writer.entry(entry)
        writer.finish(checkpoints, frontiers, epochs)


@dataclass
class Verdict:
    """What `verify_archive` found: the first problem (None: intact), warnings,
    and the DR epochs with what each gave up (reported; not a failure)."""

    problem: str | None = None
    warnings: list[str] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    entries: int = 0
    checkpoints_matched: int = 0

    def passed(self, *, strict: bool) -> bool:
        return self.problem is None and not (strict and self.warnings)


class _Problem(Exception):
    pass


@dataclass
class _LogTree:
    """One log's tree being rebuilt, and the checkpoints still to reach."""

    log: LogName
    frontier: Frontier
    checkpoints: deque[tuple[int, Checkpoint]]
    verified_size: int
    """The tree size up to which entries are covered by a matching checkpoint."""
    first_unverified_line: int = 0

    def check_reached(self, line: int) -> int:
        """Compare the root with every checkpoint at the current size; returns how many."""
        matched = 0
        while self.checkpoints and self.checkpoints[0][1].tree_size == self.frontier.size:
            cp_line, checkpoint = self.checkpoints.popleft()
            if self.frontier.root().hex() != checkpoint.root:
                first = self.verified_size + 1
                raise _Problem(
                    f"{ENTRIES_FILE} lines {self.first_unverified_line}..{line} (partition "
                    f"{self.log}, seq {first}..{checkpoint.tree_size}): the tree does not match "
                    f"the checkpoint at tree size {checkpoint.tree_size} ({CHECKPOINTS_FILE} line "
                    f"{cp_line}); an entry in seq {first}..{checkpoint.tree_size} was changed, "
                    "inserted, removed or moved, or the frontier before them was"
                )
            self.verified_size = checkpoint.tree_size
            self.first_unverified_line = line + 1
            matched += 1
        return matched


def verify_archive(directory: Path, *, pubkey: Path | None = None) -> Verdict:
    """Check an archive against a public key: by default the archive's own
    `pubkey`; a verifier who got the key from elsewhere passes that copy, so an
    archive re-signed with another key whose `pubkey` was replaced fails too."""
    verdict = Verdict()
    try:
        key = load_public_key(pubkey or directory / PUBKEY_FILE)
        listed = read_checkpoints(directory / CHECKPOINTS_FILE)
        verdict.epochs = _checked_epochs(key, read_epochs(directory / EPOCHS_FILE), listed)
        checkpoints = _signed_chains(key, listed)
        frontiers = read_frontiers(directory / FRONTIER_FILE)
        trees = _rebuild(directory / ENTRIES_FILE, checkpoints, frontiers, verdict)
    except (KeyFileError, ArchiveError, _Problem, OSError) as err:
        verdict.problem = str(err)
        return verdict
    for log, tree in trees.items():
        if tree.checkpoints:
            cp_line, checkpoint = tree.checkpoints[0]
            verdict.problem = (
                f"partition {log}: the archive ends at seq {tree.frontier.size}, but the "
                f"checkpoint at tree size {checkpoint.tree_size} ({CHECKPOINTS_FILE} line "
                f"{cp_line}) covers seq {tree.frontier.size + 1}..{checkpoint.tree_size}: "
                "entries were cut off the end"
            )
            return verdict
        if tree.frontier.size > tree.verified_size:
            verdict.warnings.append(
                f"partition {log}: seq {tree.verified_size + 1}..{tree.frontier.size} "
                f"({ENTRIES_FILE} lines {tree.first_unverified_line}..) not yet checkpointed"
            )
    return verdict


def _signed_chains(
    key: Ed25519PublicKey, checkpoints: list[tuple[int, Checkpoint]]
) -> dict[LogName, list[tuple[int, Checkpoint]]]:
    """Each log's checkpoints, once every signature and link of each chain is checked."""
    chains: dict[LogName, list[tuple[int, Checkpoint]]] = {}
    for line, checkpoint in checkpoints:
        where = (
            f"{CHECKPOINTS_FILE} line {line} (partition {checkpoint.partition}, "
            f"tree size {checkpoint.tree_size})"
        )
        problem = checkpoint_problem(key, checkpoint)
        if problem is not None:
            raise _Problem(f"{where}: {problem}")
        chain = chains.setdefault(checkpoint.partition, [])
        if chain and checkpoint.previous_size != chain[-1][1].tree_size:
            raise _Problem(
                f"{where}: it follows the checkpoint at tree size {checkpoint.previous_size}, "
                f"but the one before it in the list is at tree size {chain[-1][1].tree_size}: "
                "a checkpoint is missing, duplicated or out of order"
            )
        chain.append((line, checkpoint))
    return chains


def _checked_epochs(
    key: Ed25519PublicKey,
    epochs: list[tuple[int, EpochStart]],
    listed: list[tuple[int, Checkpoint]],
) -> list[str]:
    """Each epoch record's description, once it is signed, its kept checkpoint
    is in the list (unless the archive starts after it) and none it abandoned is."""
    in_list = {(cp.partition, cp.signature) for _, cp in listed}
    first_size: dict[LogName, int] = {}
    for _, cp in listed:
        first_size.setdefault(cp.partition, cp.tree_size)
    described = []
    for line, record in epochs:
        where = f"{EPOCHS_FILE} line {line} (log {record.epoch_of}, epoch {record.epoch})"
        problem = epoch_problem(key, record)
        if problem is not None:
            raise _Problem(f"{where}: {problem}")
        kept = record.kept
        log = record.epoch_of
        if (
            kept is not None
            and kept.tree_size >= first_size.get(log, kept.tree_size + 1)
            and (log, kept.signature) not in in_list
        ):
            raise _Problem(
                f"{where}: the chain goes on from the checkpoint at tree size {kept.tree_size}, "
                f"which is not in {CHECKPOINTS_FILE}"
            )
        for cp in record.abandoned:
            if (log, cp.signature) in in_list:
                raise _Problem(
                    f"{where}: the checkpoint at tree size {cp.tree_size} it abandoned is still "
                    f"in {CHECKPOINTS_FILE}"
                )
        described.append(record.describe())
    return described


def _rebuild(
    entries_path: Path,
    checkpoints: dict[LogName, list[tuple[int, Checkpoint]]],
    frontiers: dict[LogName, Frontier],
    verdict: Verdict,
) -> dict[LogName, _LogTree]:
    trees = {
        log: _start_tree(log, frontiers.get(log, Frontier()), checkpoints.get(log, []))
        for log in dict.fromkeys([*checkpoints, *frontiers])
    }
    for line, entry, payload, tag in read_entries(entries_path):
        tree = trees.get(entry.partition)
        if tree is None:
            tree = trees[entry.partition] = _start_tree(entry.partition, Frontier(), [])
        expected = tree.frontier.size + 1
        if entry.seq != expected:
            found = "again" if entry.seq < expected else "instead"
            raise _Problem(
                f"{ENTRIES_FILE} line {line} (partition {entry.partition}): expected seq "
                f"{expected}, found seq {entry.seq} {found}: an entry was deleted, inserted, "
                "duplicated or moved"
            )
        if not tree.first_unverified_line:
            tree.first_unverified_line = line
        tree.frontier.append(leaf_hash(tag, entry.seq, payload))
        verdict.entries += 1
        if tree.checkpoints and tree.checkpoints[0][1].tree_size == expected:
            verdict.checkpoints_matched += tree.check_reached(line)
    return trees


def _start_tree(
    log: LogName, frontier: Frontier, checkpoints: list[tuple[int, Checkpoint]]
) -> _LogTree:
    """A log's tree at its frontier, checked against any checkpoint at exactly that size."""
    tree = _LogTree(log, frontier.copy(), deque(), verified_size=0)
    for cp_line, checkpoint in checkpoints:
        if checkpoint.tree_size < frontier.size:
            continue  # It covers entries before this archive.
        if checkpoint.tree_size == frontier.size:
            if frontier.root().hex() != checkpoint.root:
                raise _Problem(
                    f"{FRONTIER_FILE} (partition {log}, tree size {frontier.size}): the frontier "
                    f"does not match the checkpoint at that size ({CHECKPOINTS_FILE} line "
                    f"{cp_line})"
                )
            tree.verified_size = frontier.size
            continue
        tree.checkpoints.append((cp_line, checkpoint))
    if frontier.size and not tree.verified_size:
        # Entries before the archive are taken on the frontier's word only
        # until a later checkpoint matches (a wrong frontier cannot).
        tree.verified_size = frontier.size
    return tree
