"""`ironbook dr failback`: site A primary again after site B was promoted,
once A holds everything B holds; then B mirrors A again (docs/dr.md,
Failback). Run in the process that owns the `LocalCluster` (`ironbook up
--dr-site`, through its control socket, or a drill), as a promotion is.

1. Re-seed A from B: A's streams sealed (if the promotion could not), each
   sealed stream exported to `dr/site-a-epoch-<n>/<stream>.jsonl` with its
   SHA-256 in `SHA256SUMS` (they hold A's epoch-n history, acknowledged
   entries B never received among them), deleted, and made again as a
   mirror of B's stream through the link (JetStream API of domain `b`);
   A provisioned with what is not mirrored, where it lacks it.
2. Catch up: a bounded wait, with progress, until A's mirrors hold what B's
   streams hold. Nothing is switched if they do not.
3. Switch (`dr_promotion.switch_primary`): the next epoch in `primary.json`
   (site a), B fenced and A unfenced, B's streams sealed, A's mirrors given
   a bounded wait to hold every entry B's sealed streams hold, then
   promoted, every service restarted against A, `dr_failback` recorded.
4. DR again: B's sealed streams exported the same way
   (`site-b-epoch-<n+1>`), replaced by mirrors of A's, and a bounded wait
   until they hold what A holds.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ironbook.adapters.nats import mirrors
from ironbook.adapters.nats.provision import close_nats
from ironbook.adapters.nats.stream_export import ExportedStream, ExportError, export_stream
from ironbook.services import dr as dr_site
from ironbook.services.cluster_events import DR_FAILBACK
from ironbook.services.dr_promotion import switch_primary
from ironbook.services.local_cluster import SEAL_TIMEOUT_S, LocalCluster

CATCH_UP_TIMEOUT_S = 120.0
"""How long site A gets to copy what site B holds before the switch: the
whole of B's streams, through the WAN link."""
REESTABLISH_TIMEOUT_S = 120.0
"""How long site B's new mirrors get to copy what site A holds."""


class FailbackReport(msgspec.Struct, frozen=True):
    """What `failback` did: the steps, the epoch site A is primary in, how
    long each phase took (seconds), per stream the entries site A's mirrors
    copied from site B (what B's sealed streams hold), what was exported
    where, and what is still missing (empty: nothing)."""

    site: str
    epoch: int
    steps: list[str]
    failback_s: float
    phases_s: dict[str, float]
    copied_entries: dict[str, int]
    exported: dict[str, list[ExportedStream]]
    """Export directory → the streams written there."""
    missing_at_switch: dict[str, int]
    """Entries B's sealed streams held that A's mirrors did not when promoted."""
    b_mirror_lag: dict[str, int]
    """Entries site B's new mirrors were still behind A when the failback ended."""


async def failback(cluster: LocalCluster, actor: str, say: Callable[[str], None]) -> FailbackReport:
    """Make site A primary again, from a site B that was promoted; the
    report. `DrError` when it cannot be, with nothing switched. Run again
    after a failback that switched but did not finish making B a mirror of
    A, it does that part only."""
    started = time.monotonic()
    switched_before = await check_failback(cluster)
    steps: list[str] = []

    def step(line: str) -> None:
        steps.append(line)
        say(line)

    phases: dict[str, float] = {}
    exported: dict[str, list[ExportedStream]] = {}
    streams = cluster.mirrored_streams
    site_a, site_b = cluster.site_endpoint(dr_site.SITE_A), cluster.site_endpoint(dr_site.SITE_B)
    missing_at_switch: dict[str, int] = {}

    if switched_before:
        step(f"site a is primary already (epoch {cluster.primary.epoch}): site b made its mirror")
    else:
        mark = time.monotonic()
        where, written = await reseed(cluster, dr_site.SITE_A, step)
        exported[str(where)] = written
        # What is not mirrored (leases, idempotency claims, odds, ...), made
        # where site A lost it (provisioning keeps the mirrors).
        try:
            await asyncio.to_thread(cluster.provision, url=site_a.url)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            raise dr_site.DrError(f"site a not provisioned: {err}") from err
        step("site a provisioned with what is not mirrored")
        phases["reseed_s"] = time.monotonic() - mark

        mark = time.monotonic()
        missing = await dr_site.wait_caught_up(site_b, site_a, streams, CATCH_UP_TIMEOUT_S, say)
        phases["catch_up_s"] = time.monotonic() - mark
        if missing:
            raise dr_site.DrError(
                f"site a did not catch up from site b within {CATCH_UP_TIMEOUT_S:.0f} s ("
                + ", ".join(f"{name} {gap} behind" for name, gap in missing.items())
                + "): nothing switched, site b is still primary; run `ironbook dr failback` again"
            )
        step(f"site a holds every entry site b holds ({phases['catch_up_s']:.1f} s)")

        mark = time.monotonic()
        # Site B is healthy and sealed: what it acknowledged last is copied
        # to A within the failback's own bound, not a disaster's few seconds.
        switch = await switch_primary(
            cluster,
            dr_site.SITE_A,
            actor,
            step,
            kind=DR_FAILBACK,
            reason="dr failback",
            catch_up_timeout_s=CATCH_UP_TIMEOUT_S,
        )
        phases["switch_s"] = time.monotonic() - mark
        missing_at_switch = switch.missing
    # B's streams are sealed now: what they hold is what A's mirrors copied.
    copied = {
        name: state.messages
        for name, state in (await dr_site.stream_states(site_b, streams)).items()
        if state is not None and state.sealed
    }

    mark = time.monotonic()
    where, written = await reseed(cluster, dr_site.SITE_B, step)
    exported[str(where)] = written
    lag = await dr_site.wait_caught_up(site_a, site_b, streams, REESTABLISH_TIMEOUT_S, say)
    phases["reestablish_s"] = time.monotonic() - mark
    if lag:
        step(
            "site b mirrors site a, still behind: "
            + ", ".join(f"{name} {gap}" for name, gap in lag.items())
        )
    else:
        step("site b mirrors site a and holds every entry site a holds")
    return FailbackReport(
        site=dr_site.SITE_A,
        epoch=cluster.primary.epoch,
        steps=steps,
        failback_s=round(time.monotonic() - started, 3),
        phases_s={name: round(took, 3) for name, took in phases.items()},
        copied_entries=copied,
        exported=exported,
        missing_at_switch=missing_at_switch,
        b_mirror_lag=lag,
    )


async def check_failback(cluster: LocalCluster) -> bool:
    """`DrError` unless a failback can start: a DR pair whose site B is
    primary, with every site-A server running (fenced, as they start after
    a promotion) and both sites answering. True when site A was made
    primary by a failback already but site B holds streams that are not
    mirrors of A's (that failback did not finish)."""
    if cluster.site_b is None:
        raise dr_site.DrError("this cluster has no DR site (start it with --dr-site)")
    streams = cluster.mirrored_streams
    on_site = {}
    for site in (dr_site.SITE_A, dr_site.SITE_B):
        on_site[site] = await dr_site.stream_states(cluster.site_endpoint(site), streams)
        if all(state is None for state in on_site[site].values()):
            raise dr_site.DrError(f"site {site} does not answer: nothing done")
    primary = cluster.primary
    if primary.site == dr_site.SITE_A:
        if primary.epoch > 1 and any(
            state is None or not state.is_mirror for state in on_site[dr_site.SITE_B].values()
        ):
            _switch_finished(cluster, on_site[dr_site.SITE_A])
            return True
        raise dr_site.DrError(
            f"site a is primary (epoch {primary.epoch}) and site b mirrors it: nothing to fail back"
        )
    down = [node.name for node in cluster.nats.nodes.values() if not node.process.is_running()]
    if down:
        raise dr_site.DrError(
            f"site a's servers {', '.join(down)} are not running: a failback copies site b "
            "onto them (they start fenced; the supervisor restarts them, or `ironbook up "
            "--dr-site` does)"
        )
    return False


def _switch_finished(cluster: LocalCluster, on_a: dict[str, mirrors.MirrorState | None]) -> None:
    """`DrError` unless the switch to site A finished: every stream on A
    writable (its mirrors promoted) and the services pointed at A. A switch
    that stopped half way is finished by the next `ironbook up --dr-site`
    (it fences, promotes and serves from the primary `primary.json` names);
    making B a mirror before that would leave no writable ledger anywhere."""
    unfinished = [
        f"{name} not writable on site a"
        for name, state in on_a.items()
        if state is None or state.is_mirror
    ]
    if cluster.primary_url != cluster.nats.url:
        unfinished.append("the services still use site b")
    if unfinished:
        raise dr_site.DrError(
            f"the switch to site a stopped half way ({'; '.join(unfinished)}): restart "
            "`ironbook up --dr-site` to finish it, then run the failback again"
        )


async def reseed(
    cluster: LocalCluster, site: dr_site.Site, say: Callable[[str], None]
) -> tuple[Path, list[ExportedStream]]:
    """`site` (not the primary) made a mirror of the primary again: its
    streams sealed where they are not yet, each sealed one exported to
    `dr/site-<site>-epoch-<n>/` (n: the epoch it was last primary in, the
    one before the primary's) and deleted, then every stream the pair
    mirrors made as a mirror of the primary's. Where the site holds a
    mirror already (a failback run again) it is kept. The export's
    directory and what was written there."""
    primary = cluster.primary
    if primary.site == site:
        raise dr_site.DrError(f"site {site} is primary: it mirrors nothing")
    streams = cluster.mirrored_streams
    endpoint = cluster.site_endpoint(site)
    await dr_site.seal_site(endpoint, streams, SEAL_TIMEOUT_S)
    states = await dr_site.stream_states(endpoint, streams)
    writable = [n for n, s in states.items() if s is not None and not s.is_mirror and not s.sealed]
    if writable:
        raise dr_site.DrError(
            f"site {site}'s streams {', '.join(writable)} could not be sealed: nothing deleted"
        )
    sealed = [name for name, state in states.items() if state is not None and state.sealed]
    directory = dr_site.export_dir(cluster.data_dir, site, primary.epoch - 1)
    written: list[ExportedStream] = []
    nc = await endpoint.connect("ironbook-dr-reseed")
    try:
        for stream in sealed:
            try:
                written.append(await export_stream(nc, stream, directory))
            except ExportError as err:
                raise dr_site.DrError(f"site {site}: {err}: nothing deleted after it") from err
            await mirrors.delete(nc, stream)
    finally:
        await close_nats(nc)
    if written:
        say(
            f"site {site}'s sealed streams exported to {directory} and deleted: "
            + ", ".join(f"{item.stream} {item.messages}" for item in written)
        )
    made = await dr_site.ensure_mirrors(
        cluster.site_endpoint(primary.site), endpoint, streams, primary.site, lambda _: None
    )
    say(f"site {site} mirrors site {primary.site}: {', '.join(made) or 'already'}")
    return directory, written
