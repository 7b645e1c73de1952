"""Checkpoint keys: made once, owner-only, and refused when they are not Ed25519."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from ironbook.adapters.audit.keys import (
    KeyFileError,
    key_id,
    load_or_create_signing_key,
    load_public_key,
    public_key_pem,
    signing_key_path,
)


def test_the_key_is_made_once_and_kept_owner_only(tmp_path: Path) -> None:
    path = signing_key_path(tmp_path)
    assert path == tmp_path / "secrets" / "audit" / "checkpoint-ed25519.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_signing_key(path)
    assert key_id(again.public_key()) == key_id(first.public_key())
    assert len(key_id(first.public_key())) == 16
    published = tmp_path / "pubkey"
    published.write_bytes(public_key_pem(first.public_key()))
    assert key_id(load_public_key(published)) == key_id(first.public_key())


def test_other_keys_and_garbage_are_refused(tmp_path: Path) -> None:
    ec_key = generate_private_key(SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_or_create_signing_key(path)
    public = tmp_path / "ec.pub"
    public.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(public)
    (tmp_path / "garbage").write_bytes(b"not a key")
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "garbage")
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "missing")
