"""Owner-only secret files, and the Ed25519 keys kept in them.

Every secret the platform makes for itself (the gateway's token key, the
audit checkpoint key, the ledger's batch-signing key) is written here: once,
atomically (concurrent creators all end up with the first one's file),
fsynced, mode 0600 in directories made 0700. Private keys are PKCS#8 PEM,
public keys SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, or not an Ed25519 key."""


def create_secret_file_once(path: Path, content: bytes) -> None:
    """Write `content` to `path` owner-only, unless `path` exists (then it is
    left as it is, whoever made it)."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        os.fsync(handle.fileno())
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key at `path`, made first if there is none."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_secret_file_once(path, pem)
    return load_signing_key(path)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key at `path` (raises `KeyFileError` if there is none)."""
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
