"""The Merkle tree against a naive recursive model of RFC 9162 §2.1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironbook.replication.merkle import (
    EMPTY_ROOT,
    EVENTS_LOG,
    Frontier,
    PartialTree,
    ProofError,
    leaf_hash,
    log_tag,
    verify_consistency,
    verify_inclusion,
)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(log_tag(0), i + 1, f"entry {i}".encode()) for i in range(n)]


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """RFC 9162 MTH, with leaf hashes given."""
    if not d:
        return _sha(b"")
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return _sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def _frontier(leaves: list[bytes]) -> Frontier:
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier


def test_the_exact_bytes() -> None:
    assert log_tag(0) == b"\x00\x00\x00\x00"
    assert log_tag(258) == b"\x00\x00\x01\x02"
    assert log_tag(EVENTS_LOG) == b"\xff\xff\xff\xff"
    assert leaf_hash(log_tag(1), 2, b"x") == _sha(
        b"\x00" + b"\x00\x00\x00\x01" + b"\x00" * 7 + b"\x02" + b"x"
    )
    assert Frontier().root() == EMPTY_ROOT == _sha(b"")


@pytest.mark.parametrize("bad", [-1, 0xFFFFFFFF, "ledger", True, 1.0])
def test_a_log_is_a_partition_or_events(bad: object) -> None:
    with pytest.raises(ValueError):
        log_tag(bad)  # type: ignore[arg-type]


@given(st.integers(0, 300))
def test_the_frontier_root_is_mth(n: int) -> None:
    leaves = _leaves(n)
    frontier = _frontier(leaves)
    assert frontier.size == n
    assert len(frontier.nodes) == n.bit_count()
    assert frontier.root() == mth(leaves)


@settings(max_examples=200)
@given(st.data())
def test_partial_tree_roots_and_proofs_match_the_model(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 200), label="size")
    start = data.draw(st.integers(0, n), label="frontier")
    leaves = _leaves(n)
    tree = PartialTree(_frontier(leaves[:start]), leaves[start:])
    size = data.draw(st.integers(max(start, 1), n), label="tree size")
    root = mth(leaves[:size])
    assert tree.root(size) == root
    if start < size:
        index = data.draw(st.integers(start, size - 1), label="index")
        proof = tree.inclusion_proof(index, size)
        assert proof == path(index, leaves[:size])
        assert verify_inclusion(leaves[index], index, size, proof, root)
    old = data.draw(st.integers(max(start, 1), size), label="old size")
    proof = tree.consistency_proof(old, size)
    assert proof == (subproof(old, leaves[:size], True) if old < size else [])
    assert verify_consistency(old, size, mth(leaves[:old]), root, proof)


@settings(max_examples=200)
@given(st.data())
def test_a_wrong_leaf_index_size_or_root_fails_inclusion(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 150), label="size")
    leaves = _leaves(n)
    tree = PartialTree(Frontier(), leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = tree.inclusion_proof(index, n)
    root = mth(leaves)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index), label="other")
    assert not verify_inclusion(leaves[other], index, n, proof, root)
    assert not verify_inclusion(leaves[index], other, n, proof, root)
    wrong_size = data.draw(st.integers(1, 2 * n).filter(lambda s: s != n), label="wrong size")
    # The root binds the size; a size whose audit path for `index` has another
    # length (or that does not hold `index`) fails on the path alone.
    if wrong_size <= index or len(path(index, _leaves(wrong_size))) != len(proof):
        assert not verify_inclusion(leaves[index], index, wrong_size, proof, root)
    assert not verify_inclusion(leaves[index], index, n, proof, mth(leaves[:-1]))
    if proof:
        flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        assert not verify_inclusion(leaves[index], index, n, flipped, root)


@settings(max_examples=200)
@given(st.data())
def test_a_wrong_size_or_root_fails_consistency(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 150), label="size")
    leaves = _leaves(n)
    tree = PartialTree(Frontier(), leaves)
    old = data.draw(st.integers(1, n - 1), label="old size")
    proof = tree.consistency_proof(old, n)
    old_root, new_root = mth(leaves[:old]), mth(leaves)
    assert verify_consistency(old, n, old_root, new_root, proof)
    assert not verify_consistency(old, n, new_root, new_root, proof)
    assert not verify_consistency(old, n, old_root, old_root, proof)
    rewritten = [*leaves[: old - 1], _sha(b"another history"), *leaves[old:]]
    # A history rewritten inside the old tree is not an extension of it.
    assert not verify_consistency(old, n, old_root, mth(rewritten), proof)
    wrong_old = data.draw(st.integers(1, n - 1).filter(lambda m: m != old), label="wrong old")
    assert not verify_consistency(wrong_old, n, mth(leaves[:wrong_old]), new_root, proof)
    assert not verify_consistency(old, n + 1, old_root, mth([*leaves, leaves[0]]), proof)


def test_proofs_behind_the_frontier_are_refused() -> None:
    leaves = _leaves(10)
    tree = PartialTree(_frontier(leaves[:5]), leaves[5:])
    with pytest.raises(ProofError):
        tree.inclusion_proof(4, 10)
    with pytest.raises(ProofError):
        tree.consistency_proof(3, 10)
    with pytest.raises(ProofError):
        tree.root(11)


def test_a_frontier_has_one_hash_per_set_bit() -> None:
    with pytest.raises(ValueError):
        Frontier(5, [EMPTY_ROOT])
    assert Frontier(5, [EMPTY_ROOT, EMPTY_ROOT]).subtrees() == [(0, 4), (4, 5)]
