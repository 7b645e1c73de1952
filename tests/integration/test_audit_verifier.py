"""The independent verifier against a real JetStream: it passes what a leader
signed, and counts, logs and records every kind of bad checkpoint; an event
outbox writes what was noted, in order, once per `Nats-Msg-Id`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from ironbook.adapters.audit.checkpoint_stream import (
    CHECKPOINT_STREAM,
    checkpoint_subject,
    ensure_checkpoint_stream,
)
from ironbook.adapters.audit.events import EventOutbox, decode_event, ensure_events_stream
from ironbook.adapters.audit.keys import key_id, sign_checkpoint
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.replication.checkpoint import Checkpoint, encode_checkpoint
from ironbook.replication.tree_keeping import LogTree
from ironbook.services.audit_verifier import AuditVerifier, VerifierMetrics


def _signed(key: Ed25519PrivateKey, tree: LogTree, previous_size: int, **change: object) -> bytes:
    fields: dict[str, object] = {
        "partition": 0,
        "tree_size": tree.size,
        "root": tree.root().hex(),
        "time_ms": 1,
        "key_id": key_id(key.public_key()),
        "previous_size": previous_size,
    }
    fields.update(change)
    return encode_checkpoint(sign_checkpoint(key, Checkpoint(**fields)))  # type: ignore[arg-type]


def test_the_verifier_passes_the_signed_log_and_reports_each_bad_checkpoint(
    nats_cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    metrics = VerifierMetrics(CollectorRegistry())

    def failures(check: str) -> float:
        value = metrics.registry.get_sample_value(
            "ironbook_audit_verify_failures_total", {"log": "0", "check": check}
        )
        return value or 0.0

    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.urls)
        try:
            log = await NatsLog.open(nc, 0)
            await ensure_checkpoint_stream(nc, replicas=3)
            await ensure_events_stream(nc, replicas=3)
            js = nc.jetstream()
            tree = LogTree(0)

            async def append(count: int) -> None:
                for _ in range(count):
                    seq = tree.size + 1
                    await log.append(
                        f"e{seq}".encode(), expected_last_seq=seq - 1, batch_id=str(seq)
                    )
                    tree.add(seq, f"e{seq}".encode())

            async def publish(document: bytes) -> None:
                await js.publish(checkpoint_subject(0), document, stream=CHECKPOINT_STREAM)

            verifier = AuditVerifier(nc, key.public_key(), metrics)
            await append(5)
            await publish(_signed(key, tree, 0))
            await append(3)
            await publish(_signed(key, tree, 5))
            assert await verifier.poll() == 2
            assert verifier.failures == []
            assert (
                metrics.registry.get_sample_value("ironbook_audit_verified_tree_size", {"log": "0"})
                == 8
            )

            await append(2)
            await publish(_signed(Ed25519PrivateKey.generate(), tree, 8))  # another key
            await publish(_signed(key, tree, 8, root="11" * 32))  # a root the log does not have
            # A broken chain, and a second root signed at size 10: a fork.
            await publish(_signed(key, tree, 3))
            await publish(_signed(key, tree, 10, tree_size=40))  # past the end of the log
            assert await verifier.poll() == 4
            counts = [failures(check) for check in ("signature", "root", "chain", "consistency")]
            assert counts == [1, 2, 1, 1]

            # Garbage on the stream is reported; the checkpoint after it still verifies.
            await js.publish(checkpoint_subject(0), b"not a checkpoint", stream=CHECKPOINT_STREAM)
            await append(2)
            await publish(_signed(key, tree, 10))
            assert await verifier.poll() == 2
            assert (
                metrics.registry.get_sample_value(
                    "ironbook_audit_verify_failures_total", {"log": "stream", "check": "format"}
                )
                == 1
            )
            assert (
                metrics.registry.get_sample_value("ironbook_audit_verified_tree_size", {"log": "0"})
                == 12
            )

            events = AuditedLog(nc, "events")
            recorded = [
                decode_event(entry.payload)
                async for entry in read_log(events, 1, await events.last_seq())
            ]
            reasons = [event.reason for event in recorded]
            assert reasons == ["signature", "root", "chain", "consistency", "root", "format"]
            assert {event.kind for event in recorded} == {"audit_verify_failure"}

            # An outbox: events noted before it runs are written in order, a
            # second one under the same Nats-Msg-Id is stored once, an event
            # of an invalid kind is given up at once.
            outbox = EventOutbox()
            outbox.note("alert", "alertmanager", "first", "name=p0-r2", msg_id="same")
            outbox.note("alert", "alertmanager", "again", "name=p0-r2", msg_id="same")
            outbox.note("Not A Kind", "x", "never", "y")
            outbox.note("process_restarted", "supervisor", "exited with code 1", "p0-r1")
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(outbox.run(nc))
                deadline = asyncio.get_running_loop().time() + 30
                while outbox.recorded + outbox.given_up < 4:
                    assert asyncio.get_running_loop().time() < deadline, "outbox stuck"
                    await asyncio.sleep(0.05)
                writer.cancel()
            assert (outbox.recorded, outbox.given_up, outbox.waiting) == (3, 1, 0)
            written = [
                decode_event(entry.payload)
                async for entry in read_log(events, len(recorded) + 1, await events.last_seq())
            ]
            assert [(e.kind, e.reason) for e in written] == [
                ("alert", "first"),
                ("process_restarted", "exited with code 1"),
            ]
        finally:
            await close_nats(nc)

    asyncio.run(scenario())
