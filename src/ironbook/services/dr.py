"""A DR site: site B mirroring site A, promotion, and the fence on site A.

    <data-dir>/dr/site.json      the link: WAN round-trip time, relay ports
    <data-dir>/dr/primary.json   which site is primary, and its epoch
    <data-dir>/dr/nats/          site B's 3 nats-server nodes (b1-b3)

Site A is the local cluster (JetStream domain `a`, nodes n1-n3, taking
leafnode links); site B (`ironbook-b`, domain `b`) dials them through the WAN
relay as the `dr-link` identity, whose permissions are what mirroring needs
and nothing else: its requests reach only the mirrored streams' consumer and
info API, and no ledger, command or status subject crosses the link. B mirrors
every ledger log, snapshot store, feed stream and both audit streams.

Promotion to B (docs/dr.md): `primary.json` is written first with the next
epoch (the commit point: from then on every start of site A's servers by
ironbook renders the fence), site A's servers are reconfigured and reloaded so
that no identity may publish to the ledger or the checkpoints, A's streams are
sealed where reachable (then B's mirrors are given a bounded wait to copy
what they hold), B's mirrors become writable streams, and the services are
restarted against B. What is not mirrored (leases, idempotency keys, odds,
revocations) is provisioned on B when the DR site starts.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.checkpoint_stream import CHECKPOINT_STREAM
from ironbook.adapters.audit.events import EVENTS_STREAM
from ironbook.adapters.audit.keys import KeyFileError, load_signing_key, signing_key_path
from ironbook.adapters.audit.stream import start_epochs
from ironbook.adapters.durable_files import fsync_directory
from ironbook.adapters.feed.nats_stream import feed_stream_name
from ironbook.adapters.nats import mirrors
from ironbook.adapters.nats.lease import start_revisions_above
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.adapters.nats.security import Permissions, inbox_prefix
from ironbook.adapters.nats.snapshots import snapshot_bucket
from ironbook.replication.batch import batch_term
from ironbook.replication.merkle import EVENTS_LOG, LogName

DR_DIR = "dr"
SITE_FILE = "site.json"
PRIMARY_FILE = "primary.json"
SITE_A: Final = "a"
SITE_B: Final = "b"
SITE_B_CLUSTER = "ironbook-b"
LINK_IDENTITY = "dr-link"
CATCH_UP_POLL_S = 0.1
PROGRESS_EVERY_S = 1.0
FENCED_SUBJECTS = ("ledger.>", "audit.checkpoint.>", "audit.event.>", "feed.>", "$O.>")
"""What no identity may publish to on a fenced site: the subjects of every
stream a DR pair mirrors (the ledger logs and their checkpoints, the
significant-event log, the feed, the snapshot object stores), so that
nothing acknowledged there is thrown away by a later failback."""
Site = Literal["a", "b"]
_UNREACHABLE = (TimeoutError, OSError, nats.errors.Error)


class DrError(RuntimeError):
    """A DR request that cannot be done (no DR site, already primary, ...)."""


class PrimaryRecord(msgspec.Struct, frozen=True):
    """`dr/primary.json`: the primary site and its epoch (1 for the first
    primary, +1 at every promotion)."""

    site: Site
    epoch: int
    at_ms: int
    by: str


class SiteLayout(msgspec.Struct, frozen=True):
    """`dr/site.json`: the link between the sites, fixed at creation."""

    wan_rtt_ms: int
    relay_ports: list[int]
    """One relay port per site-A node, in node order."""
    streams: list[str] = msgspec.field(default_factory=list)
    """The streams site B mirrors."""


def dr_dir(data_dir: Path) -> Path:
    return data_dir / DR_DIR


def has_dr_site(data_dir: Path) -> bool:
    return (dr_dir(data_dir) / SITE_FILE).exists()


def read_site(data_dir: Path) -> SiteLayout:
    path = dr_dir(data_dir) / SITE_FILE
    if not path.exists():
        raise DrError(f"{data_dir} has no DR site (start one with `ironbook up --dr-site`)")
    return msgspec.json.decode(path.read_bytes(), type=SiteLayout)


def write_site(data_dir: Path, layout: SiteLayout) -> None:
    dr_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(dr_dir(data_dir) / SITE_FILE, msgspec.json.encode(layout))


def read_primary(data_dir: Path) -> PrimaryRecord:
    """The primary record; site A at epoch 1 when none was ever written."""
    path = dr_dir(data_dir) / PRIMARY_FILE
    if not path.exists():
        return PrimaryRecord(site=SITE_A, epoch=1, at_ms=0, by="")
    return msgspec.json.decode(path.read_bytes(), type=PrimaryRecord)


def write_primary(data_dir: Path, record: PrimaryRecord) -> None:
    dr_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(dr_dir(data_dir) / PRIMARY_FILE, msgspec.json.encode(record))


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
    fsync_directory(path.parent)


def mirrored_streams(partitions: int, producers: Sequence[str]) -> list[str]:
    """Every stream site B mirrors: the ledger logs, their snapshot stores,
    the feeds, the audit checkpoints and the significant-event log."""
    return [
        *(stream_name(p) for p in range(partitions)),
        *(f"OBJ_{snapshot_bucket(p)}" for p in range(partitions)),
        *(feed_stream_name(producer) for producer in producers),
        CHECKPOINT_STREAM,
        EVENTS_STREAM,
    ]


def link_permissions(
    streams: Sequence[str], hub: Site = SITE_A, leaf: Site = SITE_B
) -> Permissions:
    """What the `dr-link` identity may do on the `hub` site it links to
    (from the `leaf` site): what mirroring `streams` needs in either
    direction, and nothing else.

    Publish is what the leaf may send into the hub, subscribe what the hub
    may send to the leaf. For the leaf's mirrors of the hub's streams: their
    consumer and info requests through `$JS.<hub>.API` and their flow-control
    answers out, the mirrored messages (`$JS.M.>`) and the API replies
    (`$JSC.R.>`) in. For the hub's mirrors of the leaf's streams (a failback
    re-seeding the hub): the same the other way round, the requests through
    `$JS.<leaf>.API` in, the messages and replies out. No stream is created,
    changed or deleted through the link, and no other subject (ledger,
    commands, heartbeats, other identities' inboxes) crosses it (the
    integration tests show mirrors catch up both ways with exactly this)."""
    return Permissions(
        purpose="the DR leafnode link: mirrors each site's streams on the other, nothing else",
        publish=(
            *_mirror_requests(streams, hub),
            "$JS.FC.>",
            "$JS.M.>",
            "$JSC.R.>",
            f"{inbox_prefix(LINK_IDENTITY)}.>",
        ),
        subscribe=(
            *_mirror_requests(streams, leaf),
            "$JS.FC.>",
            "$JS.M.>",
            "$JSC.R.>",
            f"{inbox_prefix(LINK_IDENTITY)}.>",
        ),
        responds=True,
    )


def _mirror_requests(streams: Sequence[str], domain: str) -> list[str]:
    """The API requests a mirror of `streams` makes to the origin's `domain`:
    create, look up and drop its consumer (any consumer of those streams: a
    taken-over site could drop another's, never write or delete a stream),
    and the stream's info."""
    api = f"$JS.{domain}.API"
    return [
        subject
        for stream in streams
        for subject in (
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.DELETE.{stream}.>",
            f"{api}.CONSUMER.INFO.{stream}.>",
            f"{api}.STREAM.INFO.{stream}",
        )
    ]


_GO_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1_000.0, "m": 60_000.0}


def go_duration_ms(text: str) -> float | None:
    """A Go duration as nats-server prints it (`31.2ms`, `1.5s`, `1m2.5s`),
    in milliseconds; None if it is not one."""
    total = 0.0
    rest = text.strip()
    if not rest:
        return None
    while rest:
        number = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = next((u for u in ("ns", "us", "µs", "ms", "s", "m") if rest.startswith(u)), None)
        if not number or unit is None:
            return None
        try:
            total += float(number) * _GO_UNITS_MS[unit]
        except ValueError:
            return None
        rest = rest[len(unit) :]
    return total


def link_rtts_ms(leafz: dict[str, Any]) -> list[float]:
    """The round-trip times a server's `/leafz` reports for its leafnode links."""
    found = []
    for leaf in leafz.get("leafs") or ():
        rtt = go_duration_ms(str(leaf.get("rtt", "")))
        if rtt is not None:
            found.append(rtt)
    return found


def measured_link_rtts_ms(monitor_urls: Sequence[str], timeout_s: float = 1.0) -> list[float]:
    """The leafnode links' round-trip times site B's servers report on
    `/leafz` (`monitor_urls`: their monitoring endpoints; through the relay,
    the WAN RTT); a server that does not answer is skipped."""
    found: list[float] = []
    for url in monitor_urls:
        try:
            with urllib.request.urlopen(f"{url}/leafz", timeout=timeout_s) as response:
                found += link_rtts_ms(json.loads(response.read()))
        except (OSError, ValueError):
            continue
    return found


class SiteLost(msgspec.Struct, frozen=True):
    """Site A judged lost, as `dr status` would show it: no site-A server
    answered for `unreachable_s`, and site B's mirror had heard nothing from
    A for `mirror_silent_s`."""

    unreachable_s: float
    mirror_silent_s: float
    probes: int


async def wait_site_a_lost(
    a: NatsEndpoint,
    b: NatsEndpoint,
    stream: str,
    *,
    silent_s: float,
    timeout_s: float,
    poll_s: float = 0.5,
) -> SiteLost:
    """Probe site A (`stream`'s state, as `dr status` reads it) and site B's
    mirror of `stream` until A has answered no probe for `silent_s` and the
    mirror has heard nothing from A for as long; `TimeoutError` after
    `timeout_s` (site A still answers, or B's mirror still hears it), and
    `DrError` if site B does not answer either."""
    started = time.monotonic()
    unreachable_since: float | None = None
    probes = 0
    while True:
        probes += 1
        probe_s = min(1.0, silent_s)
        async with asyncio.TaskGroup() as group:
            probe_a = group.create_task(stream_states(a, [stream], timeout_s=probe_s))
            probe_b = group.create_task(stream_states(b, [stream], timeout_s=probe_s))
        on_a, on_b = probe_a.result(), probe_b.result()
        now = time.monotonic()
        mirror = on_b[stream]
        if mirror is None:
            raise DrError(f"site b does not answer for {stream}: nothing to promote")
        if on_a[stream] is not None:
            unreachable_since = None
        elif unreachable_since is None:
            unreachable_since = now
        gone_s = 0.0 if unreachable_since is None else now - unreachable_since
        silent = mirror.active_s if mirror.active_s is not None else gone_s
        if gone_s >= silent_s and silent >= silent_s:
            return SiteLost(round(gone_s, 2), round(silent, 2), probes)
        if now - started > timeout_s:
            raise TimeoutError(
                f"site a was not lost within {timeout_s:.0f} s "
                f"(answers: {on_a[stream] is not None}, mirror silent {silent:.1f} s)"
            )
        await asyncio.sleep(poll_s)


async def ensure_mirrors(
    origin: NatsEndpoint,
    local: NatsEndpoint,
    streams: Sequence[str],
    origin_site: Site,
    say: Callable[[str], None],
) -> list[str]:
    """The `local` site mirrors each of `streams` of `origin_site` (made
    where missing, as `ops` on both sites); the streams whose mirror was
    made now."""
    made = []
    nc_origin = await origin.connect("ironbook-dr-mirrors-origin")
    try:
        nc_local = await local.connect("ironbook-dr-mirrors-local")
        try:
            for stream in streams:
                if await mirrors.ensure_mirror(nc_origin, nc_local, stream, origin_site):
                    made.append(stream)
        finally:
            await close_nats(nc_local)
    finally:
        await close_nats(nc_origin)
    if made:
        say(f"site {other_site(origin_site)} mirrors {', '.join(made)}")
    return made


async def seal_site(site: NatsEndpoint, streams: Sequence[str], timeout_s: float) -> list[str]:
    """Seal the `site`'s `streams` where it answers within `timeout_s`; the
    ones sealed now or already before (a promotion resumed after a crash):
    the site promoted must catch up with every one of them before its
    mirrors are promoted. A mirror is left as it is."""
    sealed: list[str] = []

    async def seal_all() -> None:
        nc = await site.connect("ironbook-dr-seal", within_s=timeout_s)
        try:
            for stream in streams:
                try:
                    await mirrors.seal(nc, stream)
                except mirrors.MirrorError:
                    continue
                sealed.append(stream)
        finally:
            await close_nats(nc)

    try:
        async with asyncio.timeout(timeout_s):
            await seal_all()
    except _UNREACHABLE:  # an unreachable site is fenced by its config when it starts
        return sealed
    return sealed


async def wait_caught_up(
    origin: NatsEndpoint,
    mirror: NatsEndpoint,
    streams: Sequence[str],
    timeout_s: float,
    say: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Wait up to `timeout_s` until the `mirror` site holds every entry the
    `origin` site's `streams` hold; the entries each stream is still missing
    then (empty: none). Both are read at every poll, the origin first: an
    origin that still takes writes is caught up once the mirror holds what
    the origin held a moment before (a sealed one cannot grow). `say` hears
    the progress about once a second."""
    if not streams:
        return {}
    wanted: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while True:
        origin_states = await stream_states(origin, streams)
        for name, state in origin_states.items():
            if state is not None:
                wanted[name] = state.last_seq
        mirrored = await stream_states(mirror, list(wanted))
        missing = {}
        for name, last_seq in wanted.items():
            state = mirrored[name]
            gap = last_seq - (0 if state is None else state.last_seq)
            if gap > 0:
                missing[name] = gap
        if not missing or time.monotonic() > deadline:
            return missing
        if say is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + PROGRESS_EVERY_S
            say(
                "catching up: " + ", ".join(f"{name} {gap} behind" for name, gap in missing.items())
            )
        await asyncio.sleep(CATCH_UP_POLL_S)


async def lift_terms(site: NatsEndpoint, partitions: int) -> int:
    """Every leadership term the replicas of a site being promoted will take
    made greater than every term in its ledger logs (their last entries'
    batch ids): each site's lease bucket is its own and would count on from
    its own last revision, and a term reused would reuse batch ids the other
    site already wrote. Call it before any replica runs on the site. The
    highest term found in the logs."""
    nc = await site.connect("ironbook-dr-terms")
    try:
        js = nc.jetstream()
        highest = 0
        for partition in range(partitions):
            stream = stream_name(partition)
            last_seq = (await js.stream_info(stream)).state.last_seq
            if last_seq == 0:
                continue
            last = await js.get_msg(stream, last_seq)
            term = batch_term((last.headers or {}).get("Nats-Msg-Id", ""))
            highest = max(highest, term or 0)
        await start_revisions_above(nc, highest)
        return highest
    finally:
        await close_nats(nc)


async def promote_mirrors(site: NatsEndpoint, streams: Sequence[str]) -> list[str]:
    """The `site`'s mirrors of `streams` made writable; the ones promoted now."""
    nc = await site.connect("ironbook-dr-promote")
    try:
        return [stream for stream in streams if await mirrors.promote_mirror(nc, stream)]
    finally:
        await close_nats(nc)


def other_site(site: Site) -> Site:
    return SITE_B if site == SITE_A else SITE_A


def next_primary(data_dir: Path, site: Site, actor: str | None = None) -> PrimaryRecord:
    """The record that makes `site` primary (the current one's epoch + 1);
    `DrError` if it is primary already."""
    current = read_primary(data_dir)
    if current.site == site:
        raise DrError(f"site {site} is primary already (epoch {current.epoch})")
    return PrimaryRecord(
        site=site,
        epoch=current.epoch + 1,
        at_ms=time.time_ns() // 1_000_000,
        by=actor or f"operator:{getpass.getuser()}",
    )


def export_dir(data_dir: Path, site: Site, epoch: int) -> Path:
    """Where a site's sealed streams of `epoch` (the last it was primary in)
    are exported before they are replaced by mirrors of the other site."""
    return dr_dir(data_dir) / f"site-{site}-epoch-{epoch}"


async def stream_states(
    endpoint: NatsEndpoint, streams: Sequence[str], timeout_s: float = 3.0
) -> dict[str, mirrors.MirrorState | None]:
    """Each stream's state on `endpoint`'s site; all None if it cannot be reached."""
    nc: NatsClient | None = None
    deadline = time.monotonic() + timeout_s
    try:
        # Not inside the timeout: a site that is gone keeps nats-py's first
        # connect retrying, and `connect(within_s=...)` is what ends it.
        nc = await endpoint.connect("ironbook-dr-status", within_s=timeout_s)
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await mirrors.states(nc, streams)
    except _UNREACHABLE:
        return dict.fromkeys(streams)
    finally:
        if nc is not None:
            await close_nats(nc)


async def start_audit_epoch(
    endpoint: NatsEndpoint,
    data_dir: Path,
    partitions: int,
    record: PrimaryRecord,
    *,
    sealed: Sequence[str] = (),
    missing: Mapping[str, int] | None = None,
) -> str:
    """An epoch record on every log's checkpoint chain on the new primary
    (docs/audit.md): where its chain goes on from, and which checkpoints of
    the old primary (past this site's copy) it gives up. `sealed`: the old
    primary's streams sealed at the promotion, `missing`: the entries each
    held past this site's copy. A log that has this epoch already is left
    as it is (a promotion finished by the next start). Returns what was done."""
    try:
        key = load_signing_key(signing_key_path(data_dir))
    except KeyFileError:
        return "audit epoch: no checkpoint key yet (nothing was ever signed)"
    streams: dict[LogName, str] = {p: stream_name(p) for p in range(partitions)}
    streams[EVENTS_LOG] = EVENTS_STREAM
    gaps = {log: (missing or {}).get(name, 0) for log, name in streams.items() if name in sealed}
    nc = await endpoint.connect("ironbook-dr-epoch")
    try:
        records = await start_epochs(
            nc,
            key,
            list(streams),
            epoch=record.epoch,
            site=record.site,
            origin_gaps=gaps,
            now_ms=record.at_ms,
        )
    finally:
        await close_nats(nc)
    abandoned = sum(len(started.abandoned) for started in records)
    return (
        f"audit epoch {record.epoch} started on {len(records)} log(s) "
        f"({abandoned} checkpoint(s) signed on the old primary past this site's copy abandoned)"
    )
