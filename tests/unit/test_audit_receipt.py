"""A receipt verifies offline with only the public key; any changed byte fails."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.proofs import (
    ProofBuildError,
    build_receipt,
    encode_receipt,
    verify_receipt,
)
from ironbook.adapters.audit.signer import LogSigner
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag

PAYLOADS = [f"batch {seq}".encode() for seq in range(1, 14)]


def _checkpoints(key: Ed25519PrivateKey, payloads: list[bytes]) -> list[Checkpoint]:
    signer = LogSigner(key, 0, every_entries=5)
    checkpoints = [
        cp for seq, p in enumerate(payloads, 1) if (cp := signer.add(seq, p, 1_000)) is not None
    ]
    last = signer.finish(2_000)
    return [*checkpoints, last] if last is not None else checkpoints


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.mark.parametrize("seq", range(1, len(PAYLOADS) + 1))
def test_a_receipt_verifies_with_only_the_public_key(key: Ed25519PrivateKey, seq: int) -> None:
    receipt = build_receipt(
        0, seq, frontier=Frontier(), payloads=PAYLOADS, checkpoints=_checkpoints(key, PAYLOADS)
    )
    assert receipt.checkpoint.tree_size == min(size for size in (5, 10, 13) if size >= seq)
    assert verify_receipt(key.public_key(), encode_receipt(receipt)) is None
    assert verify_receipt(Ed25519PrivateKey.generate().public_key(), encode_receipt(receipt))


def test_every_changed_byte_fails(key: Ed25519PrivateKey) -> None:
    receipt = build_receipt(
        0, 7, frontier=Frontier(), payloads=PAYLOADS, checkpoints=_checkpoints(key, PAYLOADS)
    )
    document = encode_receipt(receipt)
    for position in range(len(document)):
        for flip in (0x01, 0x02, 0x20):
            changed = bytearray(document)
            changed[position] ^= flip
            assert verify_receipt(key.public_key(), bytes(changed)) is not None, (
                position,
                bytes(changed),
            )


def test_a_receipt_from_an_archive_starting_mid_log(key: Ed25519PrivateKey) -> None:
    frontier = Frontier()
    for seq, payload in enumerate(PAYLOADS[:6], 1):
        frontier.append(leaf_hash(log_tag(0), seq, payload))
    receipt = build_receipt(
        0, 8, frontier=frontier, payloads=PAYLOADS[6:], checkpoints=_checkpoints(key, PAYLOADS)
    )
    assert verify_receipt(key.public_key(), encode_receipt(receipt)) is None


def test_no_receipt_without_a_covering_checkpoint_or_for_other_entries(
    key: Ed25519PrivateKey,
) -> None:
    checkpoints = _checkpoints(key, PAYLOADS[:10])
    with pytest.raises(ProofBuildError, match="not yet checkpointed"):
        build_receipt(0, 12, frontier=Frontier(), payloads=PAYLOADS, checkpoints=checkpoints)
    with pytest.raises(ProofBuildError, match="not among"):
        build_receipt(0, 14, frontier=Frontier(), payloads=PAYLOADS, checkpoints=checkpoints)
    rewritten = [b"another history", *PAYLOADS[1:]]
    with pytest.raises(ProofBuildError, match="do not match"):
        build_receipt(0, 3, frontier=Frontier(), payloads=rewritten, checkpoints=checkpoints)


def test_a_malformed_receipt_is_refused_not_a_crash(key: Ed25519PrivateKey) -> None:
    receipt = build_receipt(
        0, 7, frontier=Frontier(), payloads=PAYLOADS, checkpoints=_checkpoints(key, PAYLOADS)
    )
    document = encode_receipt(receipt)
    for bad in (
        document.replace(b'"seq":7', b'"seq":18446744073709551616'),
        document.replace(b'"seq":7', b'"seq":0'),
        document.replace(b'"seq":7', b'"seq":-7'),
        document.replace(b'"partition":0', b'"partition":"events"', 1),
        b"{}",
        b"null",
        b"\xff",
    ):
        assert verify_receipt(key.public_key(), bad) is not None
