"""A switch of the primary site of a DR pair, in the process that runs both
sites (`ironbook up --dr-site`, through its control socket): `ironbook dr
promote --site b` makes site B primary and fences site A; a failback
(`services/dr_failback.py`) makes site A primary again the same way once it
holds what B holds (docs/dr.md has the mechanism and the order).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from ironbook.adapters.audit.events import record_significant_event
from ironbook.adapters.nats.provision import close_nats
from ironbook.services import dr as dr_site
from ironbook.services.cluster_events import DR_TAKEOVER
from ironbook.services.local_cluster import CATCH_UP_TIMEOUT_S, LocalCluster

STOP_TIMEOUT_MS = 1_000
"""A service gets this long to stop before it is killed: the old primary is
fenced by then, so nothing it could still finish there would count, and on
a site that is gone a graceful stop only waits out its NATS timeouts."""


@dataclass(frozen=True, slots=True)
class Switch:
    """A switch of the primary site: the steps done, the new primary
    record, the entries the promoted mirrors still missed (empty: none)."""

    steps: list[str]
    record: dr_site.PrimaryRecord
    missing: dict[str, int]
    took_ms: int


async def promote_site_b(
    cluster: LocalCluster, actor: str, say: Callable[[str], None]
) -> list[str]:
    """Make site B primary; the steps done. `DrError` when it cannot be."""
    if cluster.site_b is None:
        raise dr_site.DrError("this cluster has no DR site (start it with --dr-site)")
    on_b = await dr_site.stream_states(
        cluster.site_endpoint(dr_site.SITE_B), cluster.mirrored_streams
    )
    not_mirrors = [name for name, state in on_b.items() if state is not None and state.sealed]
    if not_mirrors and cluster.primary.site == dr_site.SITE_A:
        raise dr_site.DrError(
            f"site b's streams {', '.join(not_mirrors)} are sealed, not mirrors of site a "
            "(a failback did not finish): run `ironbook dr failback` to make them mirrors"
        )
    switch = await switch_primary(
        cluster, dr_site.SITE_B, actor, say, kind=DR_TAKEOVER, reason="dr promote --site b"
    )
    return switch.steps


async def switch_primary(
    cluster: LocalCluster,
    site: dr_site.Site,
    actor: str,
    say: Callable[[str], None],
    *,
    kind: str,
    reason: str,
    catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> Switch:
    """Make `site` primary and fence the other one (docs/dr.md, the order of
    a promotion): `primary.json` with the next epoch (the commit point), the
    other site's servers fenced and this one's unfenced, the other site's
    streams sealed where it answers and a bounded wait for `site`'s mirrors
    to hold what they hold, `site`'s mirrors promoted, every service
    restarted against `site`, and `kind` recorded in `site`'s event log."""
    started = time.monotonic()
    other = dr_site.other_site(site)
    record = dr_site.next_primary(cluster.data_dir, site, actor)
    dr_site.write_primary(cluster.data_dir, record)
    cluster.primary = record
    done = [f"primary.json: site {site}, epoch {record.epoch}"]
    say(done[-1])
    reloaded = cluster.apply_fence()
    done.append(
        f"site {other} fenced: no publish to {', '.join(dr_site.FENCED_SUBJECTS)}; "
        f"site {site} unfenced (reloaded: {', '.join(reloaded) or 'none running'})"
    )
    say(done[-1])
    sealed, missing, promoted = await cluster.promote_streams(catch_up_timeout_s)
    done.append(f"site {other} streams sealed: {', '.join(sealed) or 'none reachable'}")
    say(done[-1])
    if missing:
        gaps = ", ".join(f"{name} {gap}" for name, gap in missing.items())
        done.append(f"site {site} is missing entries site {other}'s sealed streams hold: {gaps}")
        say(done[-1])
    elif sealed:
        done.append(f"site {site} holds every entry site {other}'s sealed streams hold")
        say(done[-1])
    done.append(f"site {site} mirrors promoted: {', '.join(promoted) or 'none left'}")
    say(done[-1])
    done.append(
        await dr_site.start_audit_epoch(
            cluster.site_endpoint(site),
            cluster.data_dir,
            cluster.partitions,
            record,
            sealed=sealed,
            missing=missing,
        )
    )
    say(done[-1])
    cluster.point_services_at(cluster.site_endpoint(site).url)
    restarted = await restart_services(cluster)
    done.append(f"restarted against site {site}: {', '.join(restarted)}")
    say(done[-1])
    took_ms = int((time.monotonic() - started) * 1000)
    await _record_switch(cluster, record, actor, kind, reason, took_ms)
    cluster.write_runtime()
    return Switch(steps=done, record=record, missing=missing, took_ms=took_ms)


async def restart_services(cluster: LocalCluster) -> list[str]:
    """Every service stopped and started again (now against the new primary), held
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


async def _record_switch(
    cluster: LocalCluster,
    record: dr_site.PrimaryRecord,
    actor: str,
    kind: str,
    reason: str,
    took_ms: int,
) -> None:
    """`kind` in the new primary's significant-event log (its own, now writable)."""
    nc = await cluster.site_endpoint(record.site, "supervisor").connect(f"ironbook-{kind}")
    try:
        await record_significant_event(
            nc,
            kind,
            actor,
            reason,
            target=f"site {record.site}",
            detail=f"epoch {record.epoch}; switched in {took_ms} ms",
            msg_id=f"{kind.replace('_', '-')}-{record.epoch}",
            at_ms=record.at_ms,
        )
    finally:
        await close_nats(nc)
