"""A stream exported to a file on a real nats-server: every stored message,
in order, with its subject, headers and data, sequences the stream deleted
skipped, and a hash that catches any edit of the file."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.adapters.nats.stream_export import HASH_FILE, export_stream, verify_export


async def _export(cluster: LocalNatsCluster, directory: Path) -> list[int]:
    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="RECORD", subjects=["record.>"], num_replicas=3, allow_direct=True)
        )
        for index in range(1, 2_501):
            await js.publish(
                f"record.{index % 3}",
                f"entry {index}".encode(),
                headers={"Nats-Msg-Id": str(index)},
            )
        for seq in (2, 1_000, 1_001, 2_500):
            await js.delete_msg("RECORD", seq)
        exported = await export_stream(nc, "RECORD", directory)
        assert (exported.messages, exported.first_seq, exported.last_seq) == (2_496, 1, 2_500)
    finally:
        await nc.close()
    lines = [json.loads(line) for line in (directory / "RECORD.jsonl").read_text().splitlines()]
    for line in lines:
        assert base64.b64decode(line["data"]) == f"entry {line['seq']}".encode()
        assert line["subject"] == f"record.{line['seq'] % 3}"
        assert line["headers"] == {"Nats-Msg-Id": str(line["seq"])}
        assert line["time"]
    return [line["seq"] for line in lines]


def test_a_stream_is_exported_whole_in_order_with_its_hash(
    nats_cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    seqs = asyncio.run(_export(nats_cluster, tmp_path / "export"))
    assert seqs == [seq for seq in range(1, 2_500) if seq not in (2, 1_000, 1_001)]
    assert verify_export(tmp_path / "export") == {"RECORD.jsonl": True}
    assert "RECORD.jsonl" in (tmp_path / "export" / HASH_FILE).read_text()
    exported = tmp_path / "export" / "RECORD.jsonl"
    exported.write_text(exported.read_text().replace("record.1", "record.2", 1))
    assert verify_export(tmp_path / "export") == {"RECORD.jsonl": False}
