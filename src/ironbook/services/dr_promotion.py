"""`ironbook dr promote --site b` in the process that runs both sites
(`ironbook up --dr-site`, through its control socket): site B becomes
primary and site A is fenced (docs/dr.md has the mechanism and the order).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ironbook.adapters.audit.events import record_significant_event
from ironbook.adapters.nats.provision import close_nats
from ironbook.services import dr as dr_site
from ironbook.services.cluster_events import DR_TAKEOVER
from ironbook.services.local_cluster import LocalCluster

STOP_TIMEOUT_MS = 1_000
"""A service gets this long to stop before it is killed: site A is fenced by
then, so nothing it could still finish there would count, and on a site
that is gone a graceful stop only waits out its NATS timeouts."""


async def promote_site_b(
    cluster: LocalCluster, actor: str, say: Callable[[str], None]
) -> list[str]:
    """Make site B primary; the steps done. `DrError` when it cannot be."""
    if cluster.site_b is None:
        raise dr_site.DrError("this cluster has no DR site (start it with --dr-site)")
    started = time.monotonic()
    record = dr_site.next_primary(cluster.data_dir, dr_site.SITE_B, actor)
    dr_site.write_primary(cluster.data_dir, record)
    cluster.primary = record
    done = [f"primary.json: site b, epoch {record.epoch}"]
    say(done[-1])
    reloaded = cluster.fence_site_a()
    done.append(
        f"site a fenced: no publish to {', '.join(dr_site.FENCED_SUBJECTS)} "
        f"(reloaded: {', '.join(reloaded) or 'none running'})"
    )
    say(done[-1])
    sealed, missing, promoted = await cluster.promote_site_b_streams()
    done.append(f"site a streams sealed: {', '.join(sealed) or 'none reachable'}")
    say(done[-1])
    if missing:
        gaps = ", ".join(f"{name} {gap}" for name, gap in missing.items())
        done.append(f"site b is missing entries site a's sealed streams hold: {gaps}")
        say(done[-1])
    elif sealed:
        done.append("site b holds every entry site a's sealed streams hold")
        say(done[-1])
    done.append(f"site b mirrors promoted: {', '.join(promoted) or 'none left'}")
    say(done[-1])
    done.append(
        await dr_site.start_audit_epoch(
            cluster.site_endpoint(dr_site.SITE_B),
            cluster.data_dir,
            cluster.partitions,
            record,
            sealed=sealed,
            missing=missing,
        )
    )
    say(done[-1])
    cluster.point_services_at(cluster.site_b.url)
    restarted = await _restart_services(cluster)
    done.append(f"restarted against site b: {', '.join(restarted)}")
    say(done[-1])
    took_ms = int((time.monotonic() - started) * 1000)
    await _record_takeover(cluster, record, actor, took_ms)
    cluster.write_runtime()
    return done


async def _restart_services(cluster: LocalCluster) -> list[str]:
    """Every service stopped and started again (now against site B), held
    from the supervisor meanwhile so that it does not count a restart."""
    processes = cluster.service_processes()
    with contextlib.ExitStack() as held:
        for name in processes:
            held.enter_context(cluster.supervisor.held(name))
        for process in processes.values():
            process.terminate()
        async with asyncio.TaskGroup() as stopping:
            for process in processes.values():
                stopping.create_task(asyncio.to_thread(process.stop, timeout_ms=STOP_TIMEOUT_MS))
        for process in processes.values():
            process.start()
    return list(processes)


async def _record_takeover(
    cluster: LocalCluster, record: dr_site.PrimaryRecord, actor: str, took_ms: int
) -> None:
    """`dr_takeover` in site B's significant-event log (B's own, now writable)."""
    nc = await cluster.site_endpoint(dr_site.SITE_B, "supervisor").connect("ironbook-dr-takeover")
    try:
        await record_significant_event(
            nc,
            DR_TAKEOVER,
            actor,
            "dr promote --site b",
            target="site b",
            detail=f"epoch {record.epoch}; promoted in {took_ms} ms",
            msg_id=f"dr-takeover-{record.epoch}",
            at_ms=record.at_ms,
        )
    finally:
        await close_nats(nc)
