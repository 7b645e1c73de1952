"""Why a leader stops serving. Every one of these ends a term: the replica
discards its speculative state and rebuilds as a follower."""

from __future__ import annotations

from ironbook.replication.interfaces import ReplicationError


class StepDown(ReplicationError):
    """The leader must stop serving at once."""


class LeaseLost(StepDown):
    """The lease was taken by another replica, or could not be renewed for a
    whole TTL (so it may have been)."""


class AppendGaveUp(StepDown):
    """An append's outcome stayed unknown after every retry: the leader cannot
    tell what the log holds, so it stops and rebuilds from the log."""


class LogDiverged(StepDown):
    """The log acknowledged a batch at a sequence other than the one the
    leader expected: another writer got in. Never happens with a log that
    enforces the expected sequence; checked anyway."""


class Superseded(StepDown):
    """The log holds entries past everything this leader decided: another
    replica has led since."""


class CatchUpFailed(StepDown):
    """A new leader could not read the log up to its end: better to let a
    replica with a working connection lead."""
