"""Signing checkpoints over a log as its entries are read.

`LogSigner` rebuilds a log's tree from its first entry, checks it against the
last checkpoint already signed for that log (a log that no longer matches what
was signed is refused, never re-signed), and signs a new checkpoint every
`every_entries` entries and at the end of what was read.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.keys import key_id, sign_checkpoint
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.merkle import Frontier, LogName, leaf_hash, log_tag

DEFAULT_EVERY_ENTRIES = 10_000


class HistoryRewritten(Exception):
    """The log does not match a checkpoint signed over it before."""


class LogSigner:
    def __init__(
        self,
        key: Ed25519PrivateKey,
        log: LogName,
        *,
        previous: Checkpoint | None = None,
        every_entries: int = DEFAULT_EVERY_ENTRIES,
    ) -> None:
        assert every_entries >= 1
        self._key = key
        self._key_id = key_id(key.public_key())
        self.log = log
        self._tag = log_tag(log)
        self._previous = previous
        self._every_entries = every_entries
        self.frontier = Frontier()

    @property
    def signed_size(self) -> int:
        return self._previous.tree_size if self._previous is not None else 0

    def add(self, seq: int, payload: bytes, now_ms: int) -> Checkpoint | None:
        """Take the next entry; returns a checkpoint when one falls due."""
        if seq != self.frontier.size + 1:
            raise HistoryRewritten(
                f"partition {self.log}: expected seq {self.frontier.size + 1}, read {seq}"
            )
        self.frontier.append(leaf_hash(self._tag, seq, payload))
        if self.frontier.size == self.signed_size and self._previous is not None:
            if self.frontier.root().hex() != self._previous.root:
                raise HistoryRewritten(
                    f"partition {self.log}: seq 1..{self.frontier.size} no longer match the "
                    f"checkpoint signed at tree size {self.frontier.size}"
                )
            return None
        if self.frontier.size > self.signed_size and seq % self._every_entries == 0:
            return self._sign(now_ms)
        return None

    def finish(self, now_ms: int) -> Checkpoint | None:
        """A checkpoint of everything read, unless it is already signed."""
        if self.frontier.size < self.signed_size:
            raise HistoryRewritten(
                f"partition {self.log}: the log ends at seq {self.frontier.size}, before the "
                f"checkpoint signed at tree size {self.signed_size}"
            )
        if self.frontier.size == self.signed_size:
            return None
        return self._sign(now_ms)

    def _sign(self, now_ms: int) -> Checkpoint:
        checkpoint = sign_checkpoint(
            self._key,
            Checkpoint(
                partition=self.log,
                tree_size=self.frontier.size,
                root=self.frontier.root().hex(),
                time_ms=now_ms,
                key_id=self._key_id,
                previous_size=self.signed_size,
            ),
        )
        self._previous = checkpoint
        return checkpoint
