"""Ed25519 keys for checkpoints: made once, kept owner-only, and used to sign
and check checkpoints.

The private key is PKCS#8 PEM in `<data-dir>/secrets/audit/checkpoint-ed25519.pem`
(mode 0600, directories 0700); the public key is SubjectPublicKeyInfo PEM, the
file named `pubkey` next to every checkpoint list and in every archive.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ironbook.replication.checkpoint import KEY_ID_BYTES, Checkpoint, CheckpointFormatError

SIGNING_KEY_FILE = Path("secrets") / "audit" / "checkpoint-ed25519.pem"
PUBKEY_FILE = "pubkey"


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, or not an Ed25519 key."""


def signing_key_path(data_dir: Path) -> Path:
    return data_dir / SIGNING_KEY_FILE


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, made first if there is none (atomically: two signers
    started together end up with the same key)."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise KeyFileError(f"{path}: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise KeyFileError(f"{path}: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


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
    expected = key_id(key)
    if checkpoint.key_id != expected:
        return f"signed by another key (key_id {checkpoint.key_id}, expected {expected})"
    try:
        key.verify(checkpoint.signature_bytes(), checkpoint.signed_bytes())
    except CheckpointFormatError as err:
        return f"malformed: {err}"
    except InvalidSignature:
        return "the signature does not match (forged or altered)"
    return None
