"""Proofs checkable offline with only the signer's public key.

A receipt proves that one log entry is in the log unaltered at its position:

    {"partition": 0, "seq": 42, "payload_b64": "...",
     "leaf_hash": "<hex>",                  merkle.leaf_hash of the three fields above
     "inclusion_proof": ["<hex>", ...],     RFC 9162 audit path of leaf seq - 1
     "checkpoint": {...}}                   a signed checkpoint whose tree holds seq

`verify_receipt` recomputes the leaf from the entry, walks the audit path up
to the checkpoint's root and checks the checkpoint's signature.

A consistency proof shows that a log's later checkpoint extends an earlier one
(nothing signed before was rewritten), without the entries:

    {"old": {...checkpoint}, "new": {...checkpoint},
     "proof": ["<hex>", ...]}               RFC 9162 consistency proof, old to new size
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ironbook.adapters.audit.archive import entry_line
from ironbook.adapters.audit.keys import checkpoint_problem
from ironbook.replication.checkpoint import Checkpoint, decode_b64, decode_hex
from ironbook.replication.merkle import (
    MAX_SEQ,
    Frontier,
    LogName,
    PartialTree,
    ProofError,
    leaf_hash,
    log_tag,
    verify_consistency,
    verify_inclusion,
)


class Receipt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    partition: LogName
    seq: int
    payload_b64: str
    leaf_hash: str
    inclusion_proof: list[str]
    checkpoint: Checkpoint


class ProofBuildError(ValueError):
    """No proof can be built from what is given."""


def checked_tree(
    log: LogName, frontier: Frontier, payloads: Sequence[bytes], checkpoint: Checkpoint
) -> PartialTree:
    """The tree of `log` up to `checkpoint`'s size, from its frontier and the
    payloads after it, once its root is found to match the checkpoint."""
    if not frontier.size <= checkpoint.tree_size <= frontier.size + len(payloads):
        raise ProofBuildError(
            f"the checkpoint at tree size {checkpoint.tree_size} covers entries not given"
        )
    tag = log_tag(log)
    leaves = [
        leaf_hash(tag, frontier.size + 1 + i, payload)
        for i, payload in enumerate(payloads[: checkpoint.tree_size - frontier.size])
    ]
    tree = PartialTree(frontier, leaves)
    if tree.root(checkpoint.tree_size).hex() != checkpoint.root:
        raise ProofBuildError(
            f"the entries do not match the checkpoint at tree size {checkpoint.tree_size}"
        )
    return tree


def build_receipt(
    log: LogName,
    seq: int,
    *,
    frontier: Frontier,
    payloads: Sequence[bytes],
    checkpoints: Sequence[Checkpoint],
) -> Receipt:
    """The receipt of entry `seq` of `log`, given the log's frontier, the payloads
    of the entries after it (seq frontier.size + 1 on) and the log's checkpoints:
    the first checkpoint whose tree holds the entry covers it."""
    if not frontier.size < seq <= frontier.size + len(payloads):
        raise ProofBuildError(f"seq {seq} of partition {log} is not among the entries given")
    covering = [cp for cp in checkpoints if cp.partition == log and cp.tree_size >= seq]
    if not covering:
        raise ProofBuildError(f"seq {seq} of partition {log} is not yet checkpointed")
    checkpoint = min(covering, key=lambda cp: cp.tree_size)
    tree = checked_tree(log, frontier, payloads, checkpoint)
    try:
        proof = tree.inclusion_proof(seq - 1, checkpoint.tree_size)
    except ProofError as err:
        raise ProofBuildError(str(err)) from err
    payload = payloads[seq - frontier.size - 1]
    return Receipt(
        partition=log,
        seq=seq,
        payload_b64=entry_line(log, seq, payload).payload_b64,
        leaf_hash=leaf_hash(log_tag(log), seq, payload).hex(),
        inclusion_proof=[node.hex() for node in proof],
        checkpoint=checkpoint,
    )


def encode_receipt(receipt: Receipt) -> bytes:
    return msgspec.json.encode(receipt)


def verify_receipt(key: Ed25519PublicKey, document: bytes) -> str | None:
    """Why the receipt in `document` (JSON) does not hold, or None when it does."""
    try:
        receipt = msgspec.json.decode(document, type=Receipt)
        tag = log_tag(receipt.partition)
        payload = decode_b64(receipt.payload_b64)
        proof = [decode_hex(node) for node in receipt.inclusion_proof]
        root = decode_hex(receipt.checkpoint.root)
        receipt.checkpoint.signed_bytes()
    except (msgspec.DecodeError, ValueError) as err:
        return f"not a receipt: {err}"
    if receipt.checkpoint.partition != receipt.partition:
        return "the checkpoint is for another log"
    if not 1 <= receipt.seq <= MAX_SEQ:
        return f"sequence {receipt.seq} is outside 1..{MAX_SEQ}"
    leaf = leaf_hash(tag, receipt.seq, payload)
    if leaf.hex() != receipt.leaf_hash:
        return "the entry does not hash to the receipt's leaf hash"
    index, size = receipt.seq - 1, receipt.checkpoint.tree_size
    if not verify_inclusion(leaf, index, size, proof, root):
        return f"the inclusion proof does not lead to the checkpoint's root (tree size {size})"
    problem = checkpoint_problem(key, receipt.checkpoint)
    if problem is not None:
        return f"checkpoint: {problem}"
    return None


class ConsistencyProof(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    old: Checkpoint
    new: Checkpoint
    proof: list[str]


def _checkpoint_at(log: LogName, size: int, checkpoints: Sequence[Checkpoint]) -> Checkpoint:
    for checkpoint in checkpoints:
        if checkpoint.partition == log and checkpoint.tree_size == size:
            return checkpoint
    raise ProofBuildError(f"no checkpoint of partition {log} at tree size {size}")


def build_consistency_proof(
    log: LogName,
    old_size: int,
    new_size: int,
    *,
    frontier: Frontier,
    payloads: Sequence[bytes],
    checkpoints: Sequence[Checkpoint],
) -> ConsistencyProof:
    """Proof that `log`'s checkpoint at `new_size` extends the one at `old_size`
    (both must be among `checkpoints`; `old_size` not behind the frontier)."""
    old = _checkpoint_at(log, old_size, checkpoints)
    new = _checkpoint_at(log, new_size, checkpoints)
    if not 0 < old_size <= new_size:
        raise ProofBuildError(f"no consistency proof from tree size {old_size} to {new_size}")
    tree = checked_tree(log, frontier, payloads, new)
    try:
        if tree.root(old_size).hex() != old.root:
            raise ProofBuildError(
                f"the entries do not match the checkpoint at tree size {old_size}"
            )
        proof = tree.consistency_proof(old_size, new_size)
    except ProofError as err:
        raise ProofBuildError(str(err)) from err
    return ConsistencyProof(old=old, new=new, proof=[node.hex() for node in proof])


def encode_consistency_proof(proof: ConsistencyProof) -> bytes:
    return msgspec.json.encode(proof)


def verify_consistency_proof(key: Ed25519PublicKey, document: bytes) -> str | None:
    """Why the consistency proof in `document` (JSON) does not hold, or None when
    it does: both checkpoints are signed by `key` and the newer extends the older."""
    try:
        decoded = msgspec.json.decode(document, type=ConsistencyProof)
        proof = [decode_hex(node) for node in decoded.proof]
        old_root, new_root = decode_hex(decoded.old.root), decode_hex(decoded.new.root)
    except (msgspec.DecodeError, ValueError) as err:
        return f"not a consistency proof: {err}"
    for name, checkpoint in (("old", decoded.old), ("new", decoded.new)):
        problem = checkpoint_problem(key, checkpoint)
        if problem is not None:
            return f"{name} checkpoint: {problem}"
    old, new = decoded.old, decoded.new
    if old.partition != new.partition:
        return "the checkpoints are of different logs"
    if not verify_consistency(old.tree_size, new.tree_size, old_root, new_root, proof):
        return (
            f"the tree at size {new.tree_size} does not extend the tree at size "
            f"{old.tree_size}: the log was rewritten, or the proof is wrong"
        )
    return None
