"""Ed25519 keys for checkpoints: made once, kept owner-only, and used to sign
and check checkpoints.

The private key is PKCS#8 PEM in `<data-dir>/secrets/audit/checkpoint-ed25519.pem`
(an owner-only file, `adapters.keyfiles`); the public key is SubjectPublicKeyInfo PEM, the
file named `pubkey` next to every checkpoint list and in every archive.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ironbook.adapters.keyfiles import (
    KeyFileError,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    public_key_pem,
)
from ironbook.replication.audit_epoch import EpochStart
from ironbook.replication.checkpoint import KEY_ID_BYTES, Checkpoint, CheckpointFormatError

__all__ = [
    "PUBKEY_FILE",
    "SIGNING_KEY_FILE",
    "KeyFileError",
    "checkpoint_problem",
    "epoch_problem",
    "key_id",
    "load_or_create_signing_key",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
    "sign_checkpoint",
    "sign_epoch",
    "signing_key_path",
]

SIGNING_KEY_FILE = Path("secrets") / "audit" / "checkpoint-ed25519.pem"
PUBKEY_FILE = "pubkey"


def signing_key_path(data_dir: Path) -> Path:
    return data_dir / SIGNING_KEY_FILE


def key_id(key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 over the raw public key, in hex."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_BYTES].hex()


def sign_checkpoint(key: Ed25519PrivateKey, checkpoint: Checkpoint) -> Checkpoint:
    """`checkpoint` (whose key_id must be this key's) with its signature."""
    assert checkpoint.key_id == key_id(key.public_key())
    return checkpoint.with_signature(key.sign(checkpoint.signed_bytes()))


def checkpoint_problem(key: Ed25519PublicKey, checkpoint: Checkpoint) -> str | None:
    """Why `checkpoint` is not signed by `key`, or None when it is."""
    return _signature_problem(key, checkpoint)


def epoch_problem(key: Ed25519PublicKey, record: EpochStart) -> str | None:
    """Why `record`, or a checkpoint it keeps or abandons, is not signed by
    `key`; None when all are."""
    problem = _signature_problem(key, record)
    if problem is not None:
        return problem
    for checkpoint in record.checkpoints():
        problem = _signature_problem(key, checkpoint)
        if problem is not None:
            return f"its checkpoint at tree size {checkpoint.tree_size}: {problem}"
    return None


def _signature_problem(key: Ed25519PublicKey, signed: Checkpoint | EpochStart) -> str | None:
    expected = key_id(key)
    if signed.key_id != expected:
        return f"signed by another key (key_id {signed.key_id}, expected {expected})"
    try:
        key.verify(signed.signature_bytes(), signed.signed_bytes())
    except CheckpointFormatError as err:
        return f"malformed: {err}"
    except InvalidSignature:
        return "the signature does not match (forged or altered)"
    return None


def sign_epoch(key: Ed25519PrivateKey, record: EpochStart) -> EpochStart:
    """`record` (whose key_id must be this key's) with its signature."""
    assert record.key_id == key_id(key.public_key())
    return record.with_signature(key.sign(record.signed_bytes()))
