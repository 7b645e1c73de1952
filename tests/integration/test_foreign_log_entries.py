"""Foreign entries on a real cluster's log: while bets flow, a raw NATS client
publishes three undecodable entries and one forged, well-formed batch
(a copy of a real deposit, chained onto the real tip, signed with another
key) straight onto `ledger.0`. Bets keep being accepted, every replica
reports the four entries quarantined and ends at the one state hash, the
history checker (replaying with the cluster's key) passes, the forged
deposit changed no balance, and the significant-event log holds each
quarantined entry once."""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.events import SignificantEvent, decode_event
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.adapters.ledger_keys import PartitionSigner, ledger_verifier
from ironbook.adapters.nats.log import NatsLog, stream_subject
from ironbook.chaos.workload import Workload
from ironbook.cli import main
from ironbook.client import ClientConfig, connect_ledger
from ironbook.core import acting
from ironbook.core.events import Deposited
from ironbook.replication.batch import ReplayState, encode_signed_batch
from ironbook.replication.checker import check_history
from ironbook.replication.interfaces import Fenced, LogEntry, Verifier
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import LocalCluster, collect_heartbeats
from ironbook.services.status import ReplicaHeartbeat

FOREIGN_ENTRIES = 4
FORGE_ATTEMPTS = 1_000
WAIT_S = 60.0


async def raw_nats(cluster: LocalCluster) -> NatsClient:
    """A plain NATS connection outside every ironbook service: the attacker,
    or an operator's break-glass client. With NATS permissions in place this
    is the one place to give it the `ops` identity's credentials."""
    return await cluster.ops.connect("test-foreign-writer")


def _fold(entries: list[LogEntry], verifier: Verifier | None) -> ReplayState:
    replay = ReplayState.empty(core.LedgerConfig(partition=0), verifier=verifier)
    for entry in entries:
        replay.apply(entry)
    return replay


def _quarantined_seqs(entries: list[LogEntry], verifier: Verifier) -> list[int]:
    seqs: list[int] = []
    replay = ReplayState.empty(
        core.LedgerConfig(partition=0),
        verifier=verifier,
        on_quarantine=lambda entry, _reason: seqs.append(entry.seq),
    )
    for entry in entries:
        replay.apply(entry)
    return seqs


async def _quarantine_events(cluster: LocalCluster, expected: int) -> list[SignificantEvent]:
    """The `quarantined_entry` events, once `expected` are recorded (bounded)."""
    deadline = time.monotonic() + WAIT_S
    nc = await raw_nats(cluster)
    try:
        events = AuditedLog(nc, "events")
        while True:
            found = [
                event
                async for entry in read_log(events, 1, await events.last_seq())
                if (event := decode_event(entry.payload)).kind == "quarantined_entry"
            ]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def _publish_foreign(cluster: LocalCluster) -> str:
    """Three undecodable entries, then one forged deposit chained onto the
    tip (published with the tip's sequence as the expected last sequence, as
    a leader would, until no append got in between); returns the account the
    forged deposit's batch id."""
    nc = await raw_nats(cluster)
    ledger_log = NatsLog(nc, 0)
    try:
        js = nc.jetstream()
        for n, junk in enumerate((b"", b"\xc1\xc1\xc1", msgspec.msgpack.encode(["batch/2", 1]))):
            await js.publish(stream_subject(0), junk, headers={"Nats-Msg-Id": f"junk-{n}"})
        replay = ReplayState.empty(
            core.LedgerConfig(partition=0), verifier=ledger_verifier(cluster.data_dir, 0)
        )
        forger = PartitionSigner(Ed25519PrivateKey.generate(), 0)
        deposit: Deposited | None = None
        for attempt in range(FORGE_ATTEMPTS):
            while entries := await ledger_log.read(
                replay.applied_seq + 1, max_entries=256, wait_ms=0
            ):
                for entry in entries:
                    for event in replay.apply(entry) or ():
                        if isinstance(event, Deposited):
                            deposit = event
            assert deposit is not None
            forged = msgspec.structs.replace(deposit, request_id="forged-deposit")
            batch_id = f"s999:{attempt}"
            payload = encode_signed_batch(
                forger, batch_id, replay.last_batch_id, core.encode_events([forged])
            )
            try:
                await ledger_log.append(
                    payload, expected_last_seq=replay.applied_seq, batch_id=batch_id
                )
            except Fenced:
                continue
            return batch_id
        raise AssertionError(f"the tip moved under each of {FORGE_ATTEMPTS} forgeries")
    finally:
        await ledger_log.close()
        await nc.close()


async def _quarantined_everywhere(cluster: LocalCluster) -> dict[str, ReplicaHeartbeat]:
    """Every replica's heartbeat, once each reports the foreign entries."""
    deadline = time.monotonic() + WAIT_S
    beats: dict[str, ReplicaHeartbeat] = {}
    while time.monotonic() < deadline:
        heard = await collect_heartbeats(cluster.ops, 1_500)
        beats = {b.node_id: b for b in heard.values() if b.partition == 0}
        if len(beats) == 3 and {b.quarantined for b in beats.values()} == {FOREIGN_ENTRIES}:
            break
    return beats


def test_foreign_entries_are_quarantined_while_bets_flow(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        client = await connect_ledger(
            cluster.ops,
            config=ClientConfig(request_timeout_ms=1_000, deadline_ms=60_000),
            issuer=acting("test"),
        )
        try:
            workload = Workload(client)
            await workload.setup()
            async with asyncio.TaskGroup() as group:
                group.create_task(workload.run(8.0))
                await asyncio.sleep(2.0)
                accepted_before = workload.accepted
                injected_ms = time.time() * 1000
                forged_id = await _publish_foreign(cluster)
                await asyncio.sleep(3.0)
                accepted_after = workload.accepted
        finally:
            await client.close()
        assert accepted_after > accepted_before, "no bet was accepted after the injection"
        completions = sorted(
            op.complete_wall_ms
            for op in workload.recorder.operations
            if op.outcome == "ok" and op.complete_wall_ms >= injected_ms - 1_000
        )
        gap_ms = max(b - a for a, b in itertools.pairwise(completions))
        print(f"longest gap between accepted operations around the injection: {gap_ms} ms")

        beats = await _quarantined_everywhere(cluster)
        assert {b.quarantined for b in beats.values()} == {FOREIGN_ENTRIES}, beats
        # The foreign entries fenced the leader's appends: it re-reads the tip
        # and appends again instead of stepping down, unless the re-read does
        # not yet see the entry that fenced it (a lagging stream replica on a
        # loaded machine); then it steps down, which costs an election but no
        # bet. Reported, not asserted.
        for beat in beats.values():
            if beat.last_step_down:
                print(f"{beat.node_id} stepped down: {beat.last_step_down}")

        nc = await raw_nats(cluster)
        try:
            hashes = await converged_hashes(nc, 0, cluster.replica_ids(0), timeout_ms=90_000)
            entries = list(await read_whole_log(nc, 0))
        finally:
            await nc.close()
        assert len(set(hashes.values())) == 1, hashes
        verifier = ledger_verifier(cluster.data_dir, 0)
        report = check_history(
            workload.recorder.operations,
            entries,
            hashes,
            ledger_config=core.LedgerConfig(partition=0),
            verifier=verifier,
        )
        assert report.verdict == "pass", "\n".join(map(str, report.violations))
        assert report.quarantined_entries == FOREIGN_ENTRIES
        # The forged deposit was well formed and chained onto the tip: a
        # reader that did not check signatures would have paid it; with the
        # key, the log folds to the state it folds to with the entry blanked.
        verified = _fold(entries, verifier)
        assert verified.quarantined == FOREIGN_ENTRIES
        assert core.state_hash(verified.state) in hashes.values()
        assert "forged-deposit" not in verified.state.replies
        assert "forged-deposit" in _fold(entries, None).state.replies
        blanked = [
            LogEntry(entry.seq, entry.batch_id, b"") if entry.batch_id == forged_id else entry
            for entry in entries
        ]
        assert core.state_hash(_fold(blanked, verifier).state) == core.state_hash(verified.state)

        # Each quarantined entry is one significant event, however many
        # replicas skipped it.
        seqs = _quarantined_seqs(entries, verifier)
        recorded = await _quarantine_events(cluster, len(seqs))
        assert sorted(event.source for event in recorded) == sorted(
            f"ledger/0/{seq}/0" for seq in seqs
        )
        assert {event.target for event in recorded} == {f"partition 0 seq {seq}" for seq in seqs}
        assert all(event.reason for event in recorded)

    asyncio.run(scenario())

    # The leader's Merkle tree took the foreign entries as leaves (it covers
    # the log as stored): its checkpoints verify byte for byte against the
    # stream, quarantined entries included.
    deadline = time.monotonic() + WAIT_S
    verify = ["audit", "verify", "--data-dir", str(cluster.data_dir), "--partition", "0"]
    while main([*verify, "--strict"]) != 0:
        assert time.monotonic() < deadline, "the log with foreign entries does not verify"
        time.sleep(1.0)
