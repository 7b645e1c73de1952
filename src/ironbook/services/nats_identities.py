"""One NATS identity per service kind, each with explicit allow-lists.

Every process connects with the nkey of its kind and may publish and
subscribe only to what its kind needs (everything else is refused by the
servers). Subjects, with `*` for a partition, producer or node:

- commands: `ironbook.cmdbatch.<p>.<family>`, family ∈ wallet, betting,
  market, query (`replication.families`); the replica re-checks that every
  command in a batch belongs to the subject's family.
- the log: `ledger.<p>` (stream `LEDGER_<p>`), append announcements
  `tip.ledger.<p>`; reads are `$JS.API.STREAM.INFO.*` and
  `$JS.API.DIRECT.GET.*`.
- the lease bucket `ironbook_leases` (`$KV.ironbook_leases.<key>`): replicas
  write `ledger-<p>`, the feed ingester `feed-ingest-<producer>`.
- replies: each identity's own inbox, `_INBOX.<identity>.>`; a service that
  answers requests (replica, projector) may publish to the reply subject of a
  request it received (`allow_responses`), nowhere else.

Only `ops` (the break-glass admin, used by `ironbook up` to provision streams
and by operator tools) may create, update, purge or delete streams. A new
kind of process is one new entry in `identities()` (docs/security.md has the
matrix, checked against live servers by tests/integration/test_nats_permissions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from ironbook.adapters.audit.checkpoint_stream import CHECKPOINT_STREAM, checkpoint_subject
from ironbook.adapters.audit.events import EVENTS_STREAM, event_subject
from ironbook.adapters.feed.nats_stream import feed_stream_name
from ironbook.adapters.nats.lease import DEFAULT_BUCKET as LEASE_BUCKET
from ironbook.adapters.nats.log import leader_elected_subject
from ironbook.adapters.nats.log import stream_name as log_stream_name
from ironbook.adapters.nats.security import Permissions, inbox_prefix
from ironbook.adapters.nats.snapshots import snapshot_bucket
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.services import cluster_events
from ironbook.services.feed.ingest import lease_key as ingest_lease_key
from ironbook.services.feed.provider import WORLDS_BUCKET
from ironbook.services.gateway.idempotency import BUCKET as IDEMPOTENCY_BUCKET
from ironbook.services.gateway.odds import ODDS_STREAM
from ironbook.services.gateway.revocation import BUCKET as REVOCATION_BUCKET
from ironbook.services.gateway.revocation import SUBJECT as REVOCATION_SUBJECT
from ironbook.services.ops.alerts import ALERT_EVENT, ALERTS_SUBJECT
from ironbook.services.replica import lease_key as replica_lease_key


def _inbox(identity: str) -> str:
    return f"{inbox_prefix(identity)}.>"


def _commands(*families: str) -> tuple[str, ...]:
    return tuple(f"ironbook.cmdbatch.*.{family}" for family in families)


def _stream_reads(*streams: str) -> tuple[str, ...]:
    """Info and direct gets (by sequence or by subject) of `streams`."""
    return tuple(
        subject
        for stream in streams
        for subject in (
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}",
        )
    )


def _kv_writes(bucket: str, *keys: str) -> tuple[str, ...]:
    return tuple(f"$KV.{bucket}.{key}" for key in keys)


def _consumers(*streams: str) -> tuple[str, ...]:
    """Create, read from, ack (and answer flow control of) and drop
    consumers of `streams` (never change a stream). nats-py looks a stream
    up by subject (`STREAM.NAMES`, read-only) before it subscribes."""
    return (
        "$JS.API.STREAM.NAMES",
        *(
            subject
            for stream in streams
            for subject in (
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.>",
                f"$JS.API.CONSUMER.DELETE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                f"$JS.ACK.{stream}.>",
                f"$JS.FC.{stream}.>",
            )
        ),
    )


COMMAND_SENDERS = ("gateway", "ingest", "ops", "replica")
"""The identities that may publish commands (`ironbook.cmdbatch.*`)."""


def identities(partitions: int, producers: Sequence[str] = ()) -> dict[str, Permissions]:
    """Identity → its permissions, for a cluster of `partitions` partitions
    fed by `producers`. NATS wildcards match whole tokens only, so streams
    (`LEDGER_0`) and keys (`ledger-0`) are named one by one."""
    ledgers = [log_stream_name(p) for p in range(partitions)]
    snapshots = [snapshot_bucket(p) for p in range(partitions)]
    snapshot_streams = [f"OBJ_{bucket}" for bucket in snapshots]
    feeds = [feed_stream_name(producer) for producer in producers]
    ledger_reads = _stream_reads(*ledgers)
    ledger_checkpoints = tuple(checkpoint_subject(p) for p in range(partitions))
    return {
        "replica": Permissions(
            purpose="sequencer and followers of a partition",
            publish=(
                "ledger.*",
                "tip.ledger.*",
                # The leader releases in-play bets whose delay is over.
                *_commands("betting"),
                *ledger_reads,
                *_kv_writes(LEASE_BUCKET, *(replica_lease_key(p) for p in range(partitions))),
                *_stream_reads(f"KV_{LEASE_BUCKET}"),
                *(f"$O.{bucket}.>" for bucket in snapshots),
                *_stream_reads(*snapshot_streams),
                *_consumers(*snapshot_streams),
                # The object store drops the chunks of a replaced or pruned
                # snapshot with a purge filtered to them, in its own bucket.
                *(f"$JS.API.STREAM.PURGE.{stream}" for stream in snapshot_streams),
                "ironbook.status.replica.>",
                # Replies to whoever may send commands, also through a server
                # other than the one a request came through: after a move off a
                # NATS server in lame-duck mode the new server holds no
                # response permission for requests taken before it, and their
                # senders would wait out their timeout.
                *(_inbox(sender) for sender in COMMAND_SENDERS),
                # The leader signs its log's checkpoints and records its election.
                *ledger_checkpoints,
                *_stream_reads(CHECKPOINT_STREAM),
                event_subject("leader_elected"),
            ),
            subscribe=(
                "ironbook.cmdbatch.*.*",
                "tip.ledger.*",
                # The sequencer retries an append at once when the stream's
                # leader changes under it.
                *(leader_elected_subject(p) for p in range(partitions)),
                "ironbook.admin.replica.*",
                _inbox("replica"),
            ),
            responds=True,
        ),
        "gateway": Permissions(
            purpose="HTTP gateway workers",
            publish=(
                *_commands("wallet", "betting", "market", "query"),
                "ironbook.history.*",
                f"$KV.{IDEMPOTENCY_BUCKET}.>",
                *_stream_reads(f"KV_{IDEMPOTENCY_BUCKET}", ODDS_STREAM),
                # Token revocations: announced, stored, and watched.
                REVOCATION_SUBJECT,
                f"$KV.{REVOCATION_BUCKET}.>",
                *_stream_reads(f"KV_{REVOCATION_BUCKET}"),
                *_consumers(f"KV_{REVOCATION_BUCKET}"),
                # Receipts (a ledger entry under its signed checkpoint), the
                # significant-event log's pages, and its failed logins.
                *ledger_reads,
                *_stream_reads(CHECKPOINT_STREAM, EVENTS_STREAM),
                event_subject("auth_failure"),
            ),
            subscribe=("odds.>", REVOCATION_SUBJECT, _inbox("gateway")),
        ),
        "projector": Permissions(
            purpose="history read models: reads the log, answers history pages",
            publish=ledger_reads,
            subscribe=("tip.ledger.*", "ironbook.history.*", _inbox("projector")),
            responds=True,
        ),
        "feed": Permissions(
            purpose="odds feed provider (the simulator, or a real provider's bridge)",
            publish=(
                *(f"feed.{producer}.>" for producer in producers),
                *_stream_reads(*feeds),
                f"$KV.{WORLDS_BUCKET}.>",
                *_stream_reads(f"KV_{WORLDS_BUCKET}"),
            ),
            subscribe=(_inbox("feed"),),
        ),
        "ingest": Permissions(
            purpose="feed ingester and settlement service",
            publish=(
                *_commands("market", "query"),
                "odds.>",
                *_stream_reads(*feeds),
                *_consumers(*feeds),
                *_kv_writes(LEASE_BUCKET, *(ingest_lease_key(p) for p in producers)),
                *_stream_reads(f"KV_{LEASE_BUCKET}"),
            ),
            subscribe=(_inbox("ingest"),),
        ),
        "backup": Permissions(
            purpose="scheduled backups: reads the logs and the snapshots, nothing else",
            publish=(
                *ledger_reads,
                *_stream_reads(*snapshot_streams),
                *_consumers(*snapshot_streams),
            ),
            subscribe=(_inbox("backup"),),
        ),
        "audit-verifier": Permissions(
            purpose="checks every published checkpoint against the logs, records failures",
            publish=(
                *ledger_reads,
                *_stream_reads(CHECKPOINT_STREAM, EVENTS_STREAM),
                event_subject("audit_verify_failure"),
            ),
            subscribe=(_inbox("audit-verifier"),),
        ),
        "audit-events": Permissions(
            purpose="significant-event log: derives events from the logs, signs its checkpoints",
            publish=(
                *ledger_reads,
                event_subject("*"),
                *_stream_reads(EVENTS_STREAM),
                checkpoint_subject(EVENTS_LOG),
                *_stream_reads(CHECKPOINT_STREAM),
            ),
            subscribe=(_inbox("audit-events"),),
        ),
        "alerts": Permissions(
            purpose="the alert receiver: announces and records the alerts it receives",
            publish=(ALERTS_SUBJECT, event_subject(ALERT_EVENT)),
            subscribe=(_inbox("alerts"),),
        ),
        "supervisor": Permissions(
            purpose="`ironbook up`: records its restarts, remediations, maintenance and settings",
            publish=tuple(event_subject(kind) for kind in cluster_events.KINDS),
            subscribe=(_inbox("supervisor"),),
        ),
        "ops": Permissions(
            purpose="break-glass admin: provisioning streams, operator tools",
            publish=(">",),
            subscribe=(">",),
            responds=True,
        ),
    }


IDENTITY_NAMES = tuple(identities(1))
"""Every identity, in the order of docs/security.md. The NATS metrics
collector has none: it reads the servers' monitoring ports, not NATS."""

PROCESS_IDENTITY: dict[str, str] = {
    "replica": "replica",
    "gateway": "gateway",
    "history": "projector",
    "feed-sim": "feed",
    "feed-ingest": "ingest",
    "feed-settle": "ingest",
    "backup": "backup",
    "audit-verifier": "audit-verifier",
    "audit-events": "audit-events",
    "alert-receiver": "alerts",
}
"""Process kind (`python -m ironbook.bootstrap KIND`) → the identity it connects as."""
