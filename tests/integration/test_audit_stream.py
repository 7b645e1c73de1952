"""Checkpoints on their JetStream stream (the port a leader signs through),
exports, receipts and consistency proofs over a real JetStream log."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.archive import CHECKPOINTS_FILE, ENTRIES_FILE, verify_archive
from ironbook.adapters.audit.checkpoint_stream import (
    NatsCheckpointPort,
    ensure_checkpoint_stream,
    read_checkpoint_stream,
)
from ironbook.adapters.audit.keys import PUBKEY_FILE, load_public_key, public_key_pem
from ironbook.adapters.audit.proofs import (
    encode_consistency_proof,
    encode_receipt,
    verify_consistency_proof,
    verify_receipt,
)
from ironbook.adapters.audit.stream import consistency_from_log, export_archive, receipt_from_log
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.cli import main
from ironbook.replication.tree_keeping import (
    CheckpointPolicy,
    CheckpointSchedule,
    CheckpointSuperseded,
    LogTree,
    TreeHead,
)
from ironbook.services.local_cluster import RUNTIME_FILE, RuntimeInfo

NEVER_MS = 10**9


class Leader:
    """What a leading replica does, without the replica: append, add each
    acknowledged entry to the tree, sign when due (every `every` entries)."""

    def __init__(self, nc: NatsClient, key: Ed25519PrivateKey, offsite: Path, every: int) -> None:
        self.log = NatsLog(nc, 0)
        self.tree = LogTree(0)
        self.port = NatsCheckpointPort(nc, 0, key, offsite)
        self.schedule = CheckpointSchedule(
            CheckpointPolicy(every_entries=every, every_ms=NEVER_MS), self.tree
        )

    async def start(self) -> str:
        return self.schedule.start(await self.port.last_signed(), 0)

    async def append(self, count: int, *, now_ms: int = 0) -> list[int]:
        signed = []
        for _ in range(count):
            seq = self.tree.size + 1
            payload = f"batch {seq}".encode()
            await self.log.append(payload, expected_last_seq=seq - 1, batch_id=f"b{seq}")
            self.tree.add(seq, payload)
            signed += await self.sign_if_due(now_ms)
        return signed

    async def sign_if_due(self, now_ms: int) -> list[int]:
        head = self.schedule.due(now_ms)
        if head is None:
            return []
        checkpoint = await self.port.publish(head)
        self.schedule.signed(checkpoint, now_ms)
        return [checkpoint.tree_size]


@pytest.fixture
def offsite(tmp_path: Path) -> Path:
    return tmp_path / "offsite"


def test_a_leader_signs_export_verify_and_receipts(
    nats_cluster: LocalNatsCluster, tmp_path: Path, offsite: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    pem = public_key_pem(key.public_key())
    urls = nats_cluster.urls

    async def scenario() -> None:
        nc = await connect_nats(urls)
        try:
            await NatsLog.open(nc, 0)
            await ensure_checkpoint_stream(nc, replicas=3)
            leader = Leader(nc, key, offsite, every=10)
            assert await leader.start() == ""
            assert await leader.append(25) == [10, 20]
            assert await leader.sign_if_due(NEVER_MS) == [25]  # the time bound
            assert await leader.sign_if_due(2 * NEVER_MS) == []  # nothing new

            # The next leader chains to the last checkpoint, whoever signed it.
            follower_tree = LogTree(0)
            follower_tree.add_entries(await leader.log.read(1, max_entries=100, wait_ms=500))
            successor = Leader(nc, key, offsite, every=10)
            successor.tree = follower_tree
            successor.schedule = CheckpointSchedule(
                CheckpointPolicy(every_entries=5, every_ms=NEVER_MS), follower_tree
            )
            assert await successor.start() == ""
            assert await successor.append(5) == [30]
            # The deposed leader's next checkpoint is refused, not forked.
            deposed_head = TreeHead(0, 26, b"\0" * 32, 1, previous_size=25)
            with pytest.raises(CheckpointSuperseded):
                await leader.port.publish(deposed_head)
            await successor.append(2)  # not yet checkpointed

            published = await read_checkpoint_stream(nc)
            assert [(cp.previous_size, cp.tree_size) for cp in published] == [
                (0, 10), (10, 20), (20, 25), (25, 30)
            ]  # fmt: skip

            whole = tmp_path / "whole"
            exported = await export_archive(NatsEndpoint(nats_cluster.url), [0], pem, whole)
            assert (exported.entries, exported.checkpoints) == (32, 4)
            verdict = verify_archive(whole)
            assert verdict.problem is None
            assert verdict.checkpoints_matched == 4
            assert verdict.warnings == [
                "partition 0: seq 31..32 (entries.jsonl lines 31..) not yet checkpointed"
            ]

            tail = tmp_path / "tail"
            exported = await export_archive(
                NatsEndpoint(nats_cluster.url), [0], pem, tail, from_seq=14, to_seq=25
            )
            assert (exported.entries, exported.checkpoints) == (12, 2)
            tail_verdict = verify_archive(tail)
            assert tail_verdict.problem is None
            assert tail_verdict.warnings == []

            receipt = await receipt_from_log(nc, 0, 17)
            assert receipt.checkpoint.tree_size == 20
            public = load_public_key(offsite / PUBKEY_FILE)
            assert verify_receipt(public, encode_receipt(receipt)) is None
            consistency = await consistency_from_log(nc, 0, 10, 30)
            assert verify_consistency_proof(public, encode_consistency_proof(consistency)) is None
        finally:
            await close_nats(nc)

    asyncio.run(scenario())
    assert len((offsite / CHECKPOINTS_FILE).read_bytes().splitlines()) == 4
    lines = (tmp_path / "whole" / ENTRIES_FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / "whole" / ENTRIES_FILE).write_bytes(b"".join(lines[:20]))
    problem = verify_archive(tmp_path / "whole").problem
    assert problem is not None
    assert "ends at seq 20" in problem


def test_a_leader_whose_log_contradicts_the_last_checkpoint_signs_nothing(
    nats_cluster: LocalNatsCluster, offsite: Path
) -> None:
    key = Ed25519PrivateKey.generate()

    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.urls)
        try:
            await NatsLog.open(nc, 0)
            await ensure_checkpoint_stream(nc, replicas=3)
            leader = Leader(nc, key, offsite, every=4)
            await leader.start()
            assert await leader.append(4) == [4]
            other = Leader(nc, key, offsite, every=4)
            for seq in range(1, 5):
                other.tree.add(seq, b"another history")
            assert "does not match" in await other.start()
            assert other.schedule.due(NEVER_MS) is None
            shorter = Leader(nc, key, offsite, every=4)
            assert "signed entries are missing" in await shorter.start()
        finally:
            await close_nats(nc)

    asyncio.run(scenario())


def test_the_commands_on_a_data_dir(nats_cluster: LocalNatsCluster, tmp_path: Path) -> None:
    """`ironbook audit` finds the cluster through `<data-dir>/up.json` (`ironbook up` writes it)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    runtime = RuntimeInfo(
        supervisor_pid=os.getpid(),
        nats_urls=nats_cluster.urls,
        partitions=1,
        replicas=[],
        started_at_ms=0,
    )
    (data_dir / RUNTIME_FILE).write_bytes(msgspec.json.encode(runtime))
    dd = ["--data-dir", str(data_dir)]
    assert main(["audit", "verify", *dd]) == 2  # no key published yet
    key = Ed25519PrivateKey.generate()
    pubkey = data_dir / "audit" / PUBKEY_FILE
    pubkey.parent.mkdir()
    pubkey.write_bytes(public_key_pem(key.public_key()))

    async def sign() -> None:
        nc = await connect_nats(nats_cluster.urls)
        try:
            await NatsLog.open(nc, 0)
            await ensure_checkpoint_stream(nc, replicas=3)
            leader = Leader(nc, key, tmp_path / "offsite", every=5)
            await leader.start()
            await leader.append(12)
            await leader.sign_if_due(NEVER_MS)
        finally:
            await close_nats(nc)

    asyncio.run(sign())
    assert main(["audit", "verify", *dd, "--strict"]) == 0
    assert main(["audit", "export", *dd, "--out", str(tmp_path / "a"), "--from-seq", "3"]) == 0
    assert main(["audit", "verify", str(tmp_path / "a"), "--strict"]) == 0
    assert main(["audit", "receipt", *dd, "--partition", "0", "--seq", "7",
                 "--out", str(tmp_path / "r.json")]) == 0  # fmt: skip
    assert main(["audit", "verify-receipt", str(tmp_path / "r.json"), "--pubkey", str(pubkey)]) == 0
    assert main(["audit", "prove-consistency", *dd, "--partition", "0", "--old-size", "5",
                 "--new-size", "12", "--out", str(tmp_path / "c.json")]) == 0  # fmt: skip
    assert main(["audit", "verify-consistency", str(tmp_path / "c.json"),
                 "--pubkey", str(pubkey)]) == 0  # fmt: skip
    assert main(["audit", "export", *dd, "--out", str(tmp_path / "b"), "--partition", "1"]) == 2
