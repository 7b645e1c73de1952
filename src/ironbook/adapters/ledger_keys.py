"""The ledger's batch-signing key: the proof that a log entry was written by
a partition's sequencer (`replication.batch`).

One Ed25519 key for the cluster's replicas, in
`<data-dir>/secrets/ledger/batch-ed25519.pem` (owner-only, held by the
replica identity only; any replica may lead, so each holds it), and its
public half in `batch-ed25519.pub.pem` beside it, for the readers that only
verify (the gateway's history projector). A signature covers the partition
too, so an entry signed for one partition's log is foreign on any other.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ironbook.adapters.keyfiles import (
    create_secret_file_once,
    load_or_create_signing_key,
    load_public_key,
    public_key_pem,
)

LEDGER_KEY_FILE = Path("secrets") / "ledger" / "batch-ed25519.pem"
LEDGER_PUBKEY_FILE = Path("secrets") / "ledger" / "batch-ed25519.pub.pem"


def _context(partition: int) -> bytes:
    return f"ironbook ledger partition {partition}\n".encode()


class PartitionSigner:
    """Signs (and verifies) one partition's batches: a replica's `Signer`
    and `Verifier`."""

    def __init__(self, key: Ed25519PrivateKey, partition: int) -> None:
        self._key = key
        self._verifier = PartitionVerifier(key.public_key(), partition)
        self._context = _context(partition)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(self._context + message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self._verifier.verify(message, signature)


class PartitionVerifier:
    def __init__(self, key: Ed25519PublicKey, partition: int) -> None:
        self._key = key
        self._context = _context(partition)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, self._context + message)
        except InvalidSignature:
            return False
        return True


def ledger_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The replicas' key, made (with its public half) if there is none yet."""
    key = load_or_create_signing_key(data_dir / LEDGER_KEY_FILE)
    create_secret_file_once(data_dir / LEDGER_PUBKEY_FILE, public_key_pem(key.public_key()))
    return key


def ledger_verifier(data_dir: Path, partition: int) -> PartitionVerifier:
    """For readers that verify only. Raises `KeyFileError` without the key."""
    return PartitionVerifier(load_public_key(data_dir / LEDGER_PUBKEY_FILE), partition)
