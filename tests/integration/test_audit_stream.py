"""Signing, exporting and receipts over a real JetStream log."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.archive import (
    CHECKPOINTS_FILE,
    ENTRIES_FILE,
    Verdict,
    verify_archive,
)
from ironbook.adapters.audit.keys import PUBKEY_FILE, load_public_key
from ironbook.adapters.audit.proofs import (
    encode_consistency_proof,
    encode_receipt,
    verify_consistency_proof,
    verify_receipt,
)
from ironbook.adapters.audit.stream import (
    CheckpointSigner,
    SignResult,
    consistency_from_log,
    export_archive,
    receipt_from_log,
    sign_checkpoints,
)
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.cli import main
from ironbook.services.local_cluster import RUNTIME_FILE, RuntimeInfo


async def _append(cluster: LocalNatsCluster, first: int, count: int) -> None:
    nc = await connect_nats(cluster.url)
    try:
        log = await NatsLog.open(nc, 0)
        for seq in range(first, first + count):
            await log.append(f"batch {seq}".encode(), expected_last_seq=seq - 1, batch_id=f"b{seq}")
    finally:
        await close_nats(nc)


def test_sign_export_verify_and_receipts(nats_cluster: LocalNatsCluster, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    audit_dir, offsite = tmp_path / "audit", tmp_path / "offsite"
    urls = nats_cluster.urls

    async def scenario() -> None:
        await _append(nats_cluster, 1, 25)
        signer = CheckpointSigner(key, audit_dir, offsite=offsite, every_entries=10)
        first = await sign_checkpoints(urls, [0], signer)
        assert [cp.tree_size for cp in first.signed] == [10, 20, 25]
        assert first.problems == []
        again = await sign_checkpoints(urls, [0], signer)
        assert again.signed == [] and again.problems == []
        restarted = CheckpointSigner(key, audit_dir, offsite=offsite, every_entries=10)
        assert (await sign_checkpoints(urls, [0], restarted)).signed == []

        await _append(nats_cluster, 26, 5)
        later = await sign_checkpoints(urls, [0], restarted)
        assert [(cp.previous_size, cp.tree_size) for cp in later.signed] == [(25, 30)]
        await _append(nats_cluster, 31, 2)  # not yet checkpointed

        whole = tmp_path / "whole"
        exported = await export_archive(urls, [0], audit_dir, whole)
        assert (exported.entries, exported.checkpoints) == (32, 4)
        verdict = verify_archive(whole)
        assert verdict.problem is None
        assert verdict.checkpoints_matched == 4
        assert verdict.warnings == [
            "partition 0: seq 31..32 (entries.jsonl lines 31..) not yet checkpointed"
        ]

        tail = tmp_path / "tail"
        exported = await export_archive(urls, [0], audit_dir, tail, from_seq=14, to_seq=25)
        assert (exported.entries, exported.checkpoints) == (12, 2)
        tail_verdict = verify_archive(tail)
        assert tail_verdict.problem is None
        assert tail_verdict.warnings == []

        receipt = await receipt_from_log(urls, 0, 17, audit_dir)
        assert receipt.checkpoint.tree_size == 20
        public = load_public_key(offsite / PUBKEY_FILE)
        assert verify_receipt(public, encode_receipt(receipt)) is None
        consistency = await consistency_from_log(urls, 0, 10, 30, audit_dir)
        assert verify_consistency_proof(public, encode_consistency_proof(consistency)) is None

    asyncio.run(scenario())
    assert (offsite / CHECKPOINTS_FILE).read_bytes() == (audit_dir / CHECKPOINTS_FILE).read_bytes()
    lines = (tmp_path / "whole" / ENTRIES_FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / "whole" / ENTRIES_FILE).write_bytes(b"".join(lines[:20]))
    problem = verify_archive(tmp_path / "whole").problem
    assert problem is not None
    assert "ends at seq 20" in problem


def test_the_commands_on_a_data_dir(
    nats_cluster: LocalNatsCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    asyncio.run(_append(nats_cluster, 1, 12))
    dd = ["--data-dir", str(data_dir)]
    assert main(["audit", "verify", *dd]) == 2  # nothing signed yet
    assert main(["audit", "checkpoint", *dd, "--every-entries", "5"]) == 0
    assert "partition 0: 3 checkpoint(s) signed, up to tree size 12" in capsys.readouterr().out
    key_file = data_dir / "secrets" / "audit" / "checkpoint-ed25519.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert main(["audit", "verify", *dd, "--strict"]) == 0
    assert main(["audit", "export", *dd, "--out", str(tmp_path / "a"), "--from-seq", "3"]) == 0
    assert main(["audit", "verify", str(tmp_path / "a"), "--strict"]) == 0
    assert main(["audit", "receipt", *dd, "--partition", "0", "--seq", "7",
                 "--out", str(tmp_path / "r.json")]) == 0  # fmt: skip
    pubkey = str(data_dir / "audit" / PUBKEY_FILE)
    assert main(["audit", "verify-receipt", str(tmp_path / "r.json"), "--pubkey", pubkey]) == 0
    assert main(["audit", "prove-consistency", *dd, "--partition", "0", "--old-size", "5",
                 "--new-size", "12", "--out", str(tmp_path / "c.json")]) == 0  # fmt: skip
    assert main(["audit", "verify-consistency", str(tmp_path / "c.json"), "--pubkey", pubkey]) == 0
    assert main(["audit", "export", *dd, "--out", str(tmp_path / "b"), "--partition", "1"]) == 2


def test_a_running_signer_signs_what_is_new_until_stopped(
    nats_cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate(), tmp_path / "audit", every_entries=100)
    sizes: list[int] = []

    async def scenario() -> None:
        signed: asyncio.Queue[int] = asyncio.Queue()
        stop = asyncio.Event()

        def report(result: SignResult) -> None:
            for checkpoint in result.signed:
                sizes.append(checkpoint.tree_size)
                signed.put_nowait(checkpoint.tree_size)

        async def append_then_stop() -> None:
            async with asyncio.timeout(30):
                while await signed.get() != 3:
                    pass
                # A run may fall between these two appends: it signs size 4.
                await _append(nats_cluster, 4, 2)
                while await signed.get() != 5:
                    pass
            stop.set()

        # No stream yet: the run is skipped, not fatal, and the next one signs.
        assert (await sign_checkpoints(nats_cluster.urls, [0], signer)).unavailable
        await _append(nats_cluster, 1, 3)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(append_then_stop())
            signing = tasks.create_task(
                sign_checkpoints(
                    nats_cluster.urls, [0], signer, every_s=0.05, stop=stop, report=report
                )
            )
        assert signing.result().problems == []

    asyncio.run(scenario())
    assert sizes in ([3, 5], [3, 4, 5])
    assert verify_archive_of(tmp_path, nats_cluster).problem is None


def verify_archive_of(tmp_path: Path, nats_cluster: LocalNatsCluster) -> Verdict:
    archive = tmp_path / "archive"
    asyncio.run(export_archive(nats_cluster.urls, [0], tmp_path / "audit", archive))
    return verify_archive(archive)
