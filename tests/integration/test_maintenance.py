"""`ironbook drain` through the control socket of a supervised cluster: the
NATS server leading the log hands its leaderships over before it stops, the
ledger leader hands over to a follower, the supervisor leaves both stopped
until they are handed back, and then starts them. Every step, and a restart
of a killed child, is in the significant-event log, written as the
`supervisor` identity."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ironbook.adapters.audit.events import EventOutbox, SignificantEvent, decode_event
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import close_nats
from ironbook.services.cluster_events import record_events, watch_supervisor
from ironbook.services.control import ControlError, ControlRequest, request, serve_control
from ironbook.services.local_cluster import LocalCluster, read_runtime, wait_for_leaders

TIMEOUT_S = 120


def test_drain_and_undrain_through_the_control_socket(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", partitions=1)
    try:
        cluster.start(timeout_ms=TIMEOUT_S * 1000)
        asyncio.run(_drain_and_undrain(cluster))
    finally:
        cluster.stop()


async def _drain_and_undrain(cluster: LocalCluster) -> None:
    await cluster.wait_leaders(timeout_ms=TIMEOUT_S * 1000)
    stop = asyncio.Event()
    events = EventOutbox()
    watch_supervisor(cluster.supervisor, events.note)
    async with asyncio.TaskGroup() as group:
        group.create_task(cluster.supervisor.run(stop))
        group.create_task(serve_control(cluster, stop, events.note))
        recording = group.create_task(record_events(lambda: cluster.endpoint("supervisor"), events))
        try:
            await _steps(cluster)
            await _restart_recorded(cluster)
            victim, leader = (await _recorded(cluster, "undrain", 2))[-2:]
            drained = await _recorded(cluster, "drain", 3)
            assert {e.target for e in drained} == {"n9", victim.target, leader.target}
            refused = next(e for e in drained if e.target == "n9")
            assert refused.reason.startswith("drain asked; failed: no process 'n9'")
            assert all(e.actor.startswith("operator:") for e in [*drained, victim, leader])
        finally:
            stop.set()
            recording.cancel()


async def _recorded(cluster: LocalCluster, kind: str, count: int) -> list[SignificantEvent]:
    """The events of `kind` in the log, once there are `count` (bounded)."""
    nc = await cluster.ops.connect("test-maintenance-events")
    try:
        log = AuditedLog(nc, "events")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            found = [
                event
                async for entry in read_log(log, 1, await log.last_seq())
                if (event := decode_event(entry.payload)).kind == kind
            ]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"{count} {kind} events never recorded: {found}"
            await asyncio.sleep(0.5)
    finally:
        await close_nats(nc)


async def _restart_recorded(cluster: LocalCluster) -> None:
    """A child killed by its PID is restarted, and the restart recorded with why."""
    killed = cluster.audit.pid
    before = len(await _recorded(cluster, "process_restarted", 0))
    cluster.audit.kill()
    restart = (await _recorded(cluster, "process_restarted", before + 1))[-1]
    assert restart.actor == "supervisor" and restart.target == "audit-verifier"
    assert restart.reason == "exited with code -9", restart
    assert cluster.audit.pid != killed


async def _steps(cluster: LocalCluster) -> None:
    data_dir = cluster.data_dir
    heard: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    while not (data_dir / "control.sock").exists():
        assert time.monotonic() < deadline, "the control socket never appeared"
        await asyncio.sleep(0.05)
    with pytest.raises(ControlError, match="no process 'n9'"):
        await request(data_dir, ControlRequest(op="drain", node="n9"), heard.append)

    stream = stream_name(0)
    victim = await asyncio.to_thread(cluster.nats.wait_stream_leader, stream)
    answer = await request(data_dir, ControlRequest(op="drain", node=victim), heard.append)
    assert any(f"{stream}: leader {victim} ->" in step for step in answer["done"])
    assert any("lame-duck" in step for step in answer["done"])
    # Its clients (replicas, the event recorder, ...) moved to the other
    # servers when it went into lame-duck mode, before it was stopped.
    assert not any("still connected" in step for step in answer["done"]), answer["done"]
    assert not cluster.nats.node(victim).process.is_running()
    new_leader = await asyncio.to_thread(cluster.nats.wait_stream_leader, stream, not_on=victim)
    assert new_leader != victim
    await asyncio.sleep(2.0)  # the supervisor leaves a drained server stopped
    assert not cluster.nats.node(victim).process.is_running()
    runtime = read_runtime(data_dir)
    assert runtime is not None
    assert {c.name: c.state for c in runtime.children}[f"nats-{victim}"] == "held"

    leader = (await cluster.wait_leaders(timeout_ms=TIMEOUT_S * 1000))[0].node_id
    answer = await request(data_dir, ControlRequest(op="drain", node=leader), heard.append)
    assert answer["done"] == [f"{leader} (leader) stopped"]
    await wait_for_leaders(cluster.ops, 1, not_node=leader, timeout_ms=TIMEOUT_S * 1000)
    assert not cluster.replicas[leader].is_running()

    for node in (victim, leader):
        await request(data_dir, ControlRequest(op="undrain", node=node), heard.append)
    deadline = time.monotonic() + TIMEOUT_S
    while not (cluster.replicas[leader].is_running() and cluster.nats.node(victim).healthy()):
        assert time.monotonic() < deadline, "the supervisor did not start the undrained processes"
        await asyncio.sleep(0.2)
