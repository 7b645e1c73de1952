"""A consistency proof between two signed checkpoints verifies offline; a
forked history, another key or any changed byte does not."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.proofs import (
    ProofBuildError,
    build_consistency_proof,
    encode_consistency_proof,
    verify_consistency_proof,
)
from ironbook.adapters.audit.signer import LogSigner
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag

PAYLOADS = [f"batch {seq}".encode() for seq in range(1, 24)]


def _checkpoints(key: Ed25519PrivateKey, payloads: list[bytes], every: int) -> list[Checkpoint]:
    signer = LogSigner(key, 0, every_entries=every)
    checkpoints = [
        cp for seq, p in enumerate(payloads, 1) if (cp := signer.add(seq, p, 1_000)) is not None
    ]
    last = signer.finish(2_000)
    return [*checkpoints, last] if last is not None else checkpoints


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.mark.parametrize(("old", "new"), [(3, 9), (6, 12), (6, 23), (9, 21), (12, 12), (1, 23)])
def test_a_later_checkpoint_extends_an_earlier_one(
    key: Ed25519PrivateKey, old: int, new: int
) -> None:
    checkpoints = _checkpoints(key, PAYLOADS, every=3) + _checkpoints(key, PAYLOADS[:1], every=3)
    proof = build_consistency_proof(
        0, old, new, frontier=Frontier(), payloads=PAYLOADS, checkpoints=checkpoints
    )
    assert verify_consistency_proof(key.public_key(), encode_consistency_proof(proof)) is None
    other = Ed25519PrivateKey.generate().public_key()
    assert verify_consistency_proof(other, encode_consistency_proof(proof)) is not None


def test_from_an_archive_starting_mid_log(key: Ed25519PrivateKey) -> None:
    frontier = Frontier()
    for seq, payload in enumerate(PAYLOADS[:8], 1):
        frontier.append(leaf_hash(log_tag(0), seq, payload))
    checkpoints = _checkpoints(key, PAYLOADS, every=4)
    proof = build_consistency_proof(
        0, 8, 20, frontier=frontier, payloads=PAYLOADS[8:], checkpoints=checkpoints
    )
    assert verify_consistency_proof(key.public_key(), encode_consistency_proof(proof)) is None
    with pytest.raises(ProofBuildError):
        build_consistency_proof(
            0, 4, 20, frontier=frontier, payloads=PAYLOADS[8:], checkpoints=checkpoints
        )


def test_a_forked_history_is_not_consistent(key: Ed25519PrivateKey) -> None:
    honest = _checkpoints(key, PAYLOADS, every=6)
    forked_payloads = [*PAYLOADS[:4], b"a rewritten bet", *PAYLOADS[5:]]
    forked = _checkpoints(key, forked_payloads, every=6)
    proof = build_consistency_proof(
        0, 12, 23, frontier=Frontier(), payloads=forked_payloads, checkpoints=forked
    )
    spliced = proof.__class__(old=honest[1], new=proof.new, proof=proof.proof)
    problem = verify_consistency_proof(key.public_key(), encode_consistency_proof(spliced))
    assert problem is not None
    assert "does not extend" in problem
    with pytest.raises(ProofBuildError, match="do not match"):
        build_consistency_proof(
            0, 6, 23, frontier=Frontier(), payloads=forked_payloads, checkpoints=honest
        )


def test_every_changed_byte_fails(key: Ed25519PrivateKey) -> None:
    proof = build_consistency_proof(
        0,
        6,
        18,
        frontier=Frontier(),
        payloads=PAYLOADS,
        checkpoints=_checkpoints(key, PAYLOADS, every=6),
    )
    document = encode_consistency_proof(proof)
    for position in range(len(document)):
        for flip in (0x01, 0x20):
            changed = bytearray(document)
            changed[position] ^= flip
            assert verify_consistency_proof(key.public_key(), bytes(changed)) is not None, position


def test_no_proof_without_both_checkpoints(key: Ed25519PrivateKey) -> None:
    checkpoints = _checkpoints(key, PAYLOADS, every=6)
    with pytest.raises(ProofBuildError, match="no checkpoint of partition 0 at tree size 7"):
        build_consistency_proof(
            0, 7, 12, frontier=Frontier(), payloads=PAYLOADS, checkpoints=checkpoints
        )
    with pytest.raises(ProofBuildError, match="no consistency proof"):
        build_consistency_proof(
            0, 12, 6, frontier=Frontier(), payloads=PAYLOADS, checkpoints=checkpoints
        )
