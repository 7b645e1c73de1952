"""A Merkle tree over one log (a partition's, or the significant-event log),
as Certificate Transparency defines it (RFC 6962, RFC 9162 §2.1).

Exact bytes (SHA-256 throughout):

    log tag    4 bytes: the partition number, unsigned big-endian
               (0 .. 0xFFFFFFFE); 0xFFFFFFFF for the significant-event log `events`
    leaf hash  SHA-256(0x00 ‖ log tag ‖ stream sequence as 8 bytes big-endian ‖ payload)
    node hash  SHA-256(0x01 ‖ left ‖ right)
    empty root SHA-256 of no bytes

The leaf commits to where an entry sits (log and sequence) as well as to what it
says, so an entry moved to another position or another log no longer matches.
The tree over n leaves is RFC 9162's MTH: the left subtree holds the largest
power of two below n leaves.

`Frontier` is the incremental tree a writer or a verifier keeps: only the roots
of its perfect subtrees (O(log n) hashes, O(1) amortized hashing per leaf).
`PartialTree` is a frontier followed by known leaves: enough to compute roots,
inclusion proofs and consistency proofs for any position past the frontier, so
an archive that starts mid-log needs only the frontier of what came before.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EVENTS_LOG = "events"
"""Where a partition number would go, the name of the significant-event log."""
EVENTS_TAG = 0xFFFFFFFF
MAX_PARTITION = EVENTS_TAG - 1
MAX_SEQ = 2**64 - 1
"""Stream sequences are 1..MAX_SEQ (8 bytes in a leaf)."""
HASH_BYTES = 32

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

LogName = int | str
"""A partition number, or `EVENTS_LOG`."""


class ProofError(ValueError):
    """A proof cannot be built: the position is outside the tree or behind the frontier."""


def log_tag(log: LogName) -> bytes:
    """The 4 bytes that name a log inside its leaf hashes."""
    if log == EVENTS_LOG:
        return EVENTS_TAG.to_bytes(4, "big")
    if isinstance(log, bool) or not isinstance(log, int) or not 0 <= log <= MAX_PARTITION:
        raise ValueError(f"a log is a partition number 0..{MAX_PARTITION} or {EVENTS_LOG!r}")
    return log.to_bytes(4, "big")


def leaf_hash(tag: bytes, seq: int, payload: bytes) -> bytes:
    """The leaf of the entry at stream sequence `seq` (1-based) of the log `tag`."""
    assert len(tag) == 4
    assert 1 <= seq <= MAX_SEQ
    return hashlib.sha256(_LEAF_PREFIX + tag + seq.to_bytes(8, "big") + payload).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two strictly below `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The roots of the perfect subtrees of a tree of `size` leaves, largest first."""

    __slots__ = ("_nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves holds {size.bit_count()} hashes")
        if any(len(node) != HASH_BYTES for node in nodes):
            raise ValueError("a frontier hash is 32 bytes")
        self.size = size
        self._nodes = list(nodes)

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> None:
        node = leaf
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while size & 1:
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root

    def copy(self) -> Frontier:
        return Frontier(self.size, self._nodes)

    def subtrees(self) -> list[tuple[int, int]]:
        """The leaf range [start, end) of each frontier hash, in order."""
        ranges = []
        start = 0
        for bit in reversed(range(self.size.bit_length())):
            if self.size >> bit & 1:
                ranges.append((start, start + (1 << bit)))
                start += 1 << bit
        return ranges


class PartialTree:
    """A frontier of `frontier.size` leaves followed by the leaves that come next.

    Leaf indices are 0-based (the leaf at index i is stream sequence i + 1).
    Anything that only needs the frontier's subtrees whole and the later leaves
    one by one can be computed: every root from the frontier's size on, every
    inclusion proof of a later leaf, and every consistency proof from a size at
    or past the frontier.
    """

    def __init__(self, frontier: Frontier, leaves: Sequence[bytes]) -> None:
        self._frontier_nodes = dict(zip(frontier.subtrees(), frontier.nodes, strict=True))
        self.start = frontier.size
        self._leaves = leaves

    @property
    def size(self) -> int:
        return self.start + len(self._leaves)

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH of the leaves [lo, hi)."""
        known = self._frontier_nodes.get((lo, hi))
        if known is not None:
            return known
        if hi - lo == 1:
            if lo < self.start:
                raise ProofError(f"leaf {lo} is behind the frontier ({self.start} leaves)")
            return self._leaves[lo - self.start]
        k = _split(hi - lo)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def _check_size(self, size: int) -> None:
        if not self.start <= size <= self.size:
            raise ProofError(f"tree size {size} is outside {self.start}..{self.size}")

    def root(self, size: int) -> bytes:
        self._check_size(size)
        return self._hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1: the audit path of leaf `index` in the tree of `size` leaves."""
        self._check_size(size)
        if not self.start <= index < size:
            raise ProofError(f"leaf {index} is not in {self.start}..{size - 1}")
        return self._path(index, 0, size)

    def _path(self, index: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if index < lo + k:
            return [*self._path(index, lo, lo + k), self._hash(lo + k, hi)]
        return [*self._path(index, lo + k, hi), self._hash(lo, lo + k)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1: proof that the tree of `old_size` leaves is a prefix
        of the tree of `new_size` leaves."""
        self._check_size(new_size)
        if not self.start <= old_size <= new_size or old_size == 0:
            raise ProofError(f"no consistency proof from {old_size} to {new_size}")
        if old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, complete=True)

    def _subproof(self, m: int, lo: int, hi: int, *, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self._hash(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete=complete), self._hash(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, complete=False), self._hash(lo, lo + k)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: whether `proof` shows leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: whether `proof` shows the tree of `old_size` leaves
    (root `old_root`) is a prefix of the tree of `new_size` leaves (`new_root`)."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
