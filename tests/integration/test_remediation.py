"""A real monitored cluster with the watcher's remediation as `ironbook up
--monitoring` builds it (`bootstrap.remediating_watch`): a follower frozen with
SIGSTOP (never woken) stops answering its scrape, the watcher finds it, and
the remediation has the supervisor kill it by its PID and restart it;
`ironbook status --json` shows the new pid, and the action is a significant
event of actor `watch` with its evidence. The supervisor's own hung check is
set far beyond the test, so only the remediation can have done it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from ironbook.adapters.prometheus import wait_targets_up
from ironbook.bootstrap import remediating_watch
from ironbook.services import watch
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.supervisor import RestartPolicy
from ironbook.settings import Settings, load_settings

IRONBOOK = str(Path(sys.executable).parent / "ironbook")
WAIT_S = 60.0
"""Bounded waits, generous for a loaded machine."""
BASELINE_ROUNDS = 12
"""Rounds for the detectors to see the calm first (`min_samples` is 5)."""


def test_a_frozen_follower_is_killed_and_restarted_by_remediation(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "monitoring": {"enabled": True},
            "watch": {
                "remediate": True,
                "interval_ms": 500,
                "min_samples": 5,
                "window_samples": 30,
                "gap_samples": 2,
                "forecast_horizon_s": 1.0,
                "remediation_settle_s": 2.0,
            },
        },
    )
    never = 10 * 60_000
    cluster = LocalCluster(
        tmp_path / "cluster",
        partitions=1,
        monitoring=settings.monitoring,
        supervision=RestartPolicy(hung_after_ms=never, startup_grace_ms=never),
    )
    try:
        cluster.start(timeout_ms=120_000)
        asyncio.run(_freeze_a_follower(cluster, settings))
    finally:
        cluster.stop()


async def _freeze_a_follower(cluster: LocalCluster, settings: Settings) -> None:
    assert cluster.monitoring is not None
    leaders = await cluster.wait_leaders(timeout_ms=120_000)
    metrics = await cluster.serve_supervisor_metrics()  # as `up` serves it
    assert metrics is not None
    async with metrics:
        await asyncio.to_thread(
            wait_targets_up,
            cluster.monitoring.prometheus_url,
            {"ironbook-replica"},
            timeout_s=WAIT_S,
        )
        await _freeze(cluster, settings, leaders[0].node_id)


async def _freeze(cluster: LocalCluster, settings: Settings, leader: str) -> None:
    victim = next(n for n in cluster.replica_ids(0) if n != leader)
    process = cluster.replicas[victim]
    noted: list[tuple[str, str, str, str, str]] = []

    def note(
        kind: str,
        actor: str,
        reason: str,
        target: str,
        detail: str = "",
        *,
        msg_id: str | None = None,
    ) -> None:
        noted.append((kind, actor, reason, target, detail))

    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(cluster.supervisor.run(stop))
        watcher, remediator = remediating_watch(settings, cluster, note)
        group.create_task(remediator.run(stop))
        group.create_task(watch.run(watcher, settings.watch.interval_ms / 1000, stop))
        try:
            baseline_from = time.monotonic()
            while watcher.rounds < BASELINE_ROUNDS:
                assert time.monotonic() - baseline_from < WAIT_S, watcher.rounds
                await asyncio.sleep(0.1)
            old_pid = process.pid
            await asyncio.to_thread(process.pause)
            frozen_at = time.monotonic()
            while True:
                kills = [n for n in noted if n[0] == "remediation_kill_restart"]
                if kills and process.is_running() and process.pid != old_pid:
                    break
                assert time.monotonic() - frozen_at < WAIT_S, (victim, noted)
                await asyncio.sleep(0.05)
            print(f"{victim} frozen, restarted after {time.monotonic() - frozen_at:.1f} s")
            _, actor, reason, target, detail = kills[0]
            assert (actor, target) == ("watch", victim)
            assert "scrape is missing" in reason
            assert "series scrape_up" in detail and f"pid {old_pid}" in detail
            child = cluster.supervisor.children[victim]
            assert child.hung_kills == 1
            deadline = time.monotonic() + WAIT_S
            while True:
                view = await asyncio.to_thread(_status, cluster.data_dir)
                children = {c["name"]: c for c in view["children"]}
                if children[victim]["pid"] == process.pid:
                    break
                assert time.monotonic() < deadline, children[victim]
                await asyncio.sleep(0.2)
            assert children[victim]["pid"] != old_pid
        finally:
            stop.set()


def _status(data_dir: Path) -> dict[str, list[dict[str, object]]]:
    done = subprocess.run(
        [IRONBOOK, "status", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    view: dict[str, list[dict[str, object]]] = json.loads(done.stdout)
    return view
