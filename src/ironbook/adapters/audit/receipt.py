"""A receipt: proof, checkable offline with only the signer's public key, that
one log entry is in the log unaltered at its position.

    {"partition": 0, "seq": 42, "payload_b64": "...",
     "leaf_hash": "<hex>",                  merkle.leaf_hash of the three fields above
     "inclusion_proof": ["<hex>", ...],     RFC 9162 audit path of leaf seq - 1
     "checkpoint": {...}}                   a signed checkpoint whose tree holds seq

`verify_receipt` recomputes the leaf from the entry, walks the audit path up
to the checkpoint's root and checks the checkpoint's signature.
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
    verify_inclusion,
)


class Receipt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    partition: LogName
    seq: int
    payload_b64: str
    leaf_hash: str
    inclusion_proof: list[str]
    checkpoint: Checkpoint


class ReceiptError(ValueError):
    """No receipt can be built for that entry from what is given."""


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
    tag = log_tag(log)
    if not frontier.size < seq <= frontier.size + len(payloads):
        raise ReceiptError(f"seq {seq} of partition {log} is not among the entries given")
    covering = [cp for cp in checkpoints if cp.partition == log and cp.tree_size >= seq]
    if not covering:
        raise ReceiptError(f"seq {seq} of partition {log} is not yet checkpointed")
    checkpoint = min(covering, key=lambda cp: cp.tree_size)
    if checkpoint.tree_size > frontier.size + len(payloads):
        raise ReceiptError(
            f"the checkpoint at tree size {checkpoint.tree_size} covers entries not given"
        )
    leaves = [
        leaf_hash(tag, frontier.size + 1 + i, payload)
        for i, payload in enumerate(payloads[: checkpoint.tree_size - frontier.size])
    ]
    tree = PartialTree(frontier, leaves)
    if tree.root(checkpoint.tree_size).hex() != checkpoint.root:
        raise ReceiptError(
            f"the entries do not match the checkpoint at tree size {checkpoint.tree_size}"
        )
    try:
        proof = tree.inclusion_proof(seq - 1, checkpoint.tree_size)
    except ProofError as err:
        raise ReceiptError(str(err)) from err
    payload = payloads[seq - frontier.size - 1]
    return Receipt(
        partition=log,
        seq=seq,
        payload_b64=entry_line(log, seq, payload).payload_b64,
        leaf_hash=leaves[seq - frontier.size - 1].hex(),
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
