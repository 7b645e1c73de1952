"""`ironbook dr`: the DR layout of an `ironbook up --dr-site` or `--dr-mode` cluster (docs/dr.md).

    ironbook dr status [--json]     per mirrored stream: the origin's last
                                    sequence (site A), the mirror's (site B),
                                    entries behind and seconds since the mirror
                                    last heard from A; which site is primary;
                                    the links' RTT as site B's servers measure it
    ironbook dr promote --site b    make site B primary and fence site A
    ironbook dr drill --seed S --duration T
                                    a drill on a fresh DR pair of its own: the
                                    chaos workload on site A, site A cut off
                                    (SIGKILL of all its processes) at a seeded
                                    moment, the loss detected, B promoted, the
                                    workload going on against B; the history
                                    checked against B's log; RTO and RPO
                                    measured (docs/dr.md, "Drills")
    ironbook dr failback            make site A primary again once it holds
                                    what B holds; then B mirrors A again

On a stretch cluster (`--dr-mode stretch`) `status` shows instead each node's
site (from its own server tags), its routes' round-trip times as the servers
measure them (`/routez`: through the relay, the WAN RTT) and the ports they
reach their peers on, and every stream's servers with their sites (stream
info's `cluster.leader` and `cluster.replicas`): `one_per_site` is true when
every stream has one replica in each of the three sites. Exit 0 when the
cluster answers and every stream is one per site. There is nothing to
promote in stretch mode.

`promote` asks the running `up` process (its control socket) to do it all:
write `dr/primary.json` with the next epoch, fence site A (its servers
reloaded so that no identity may publish to the ledger or the checkpoints,
its streams sealed where reachable), promote B's mirrors to writable streams,
restart every service against B and record `dr_takeover`. With
no `up` running it writes `dr/primary.json` only, and the next `ironbook up
--dr-site` does the rest as it starts.

`failback` also asks the running `up` (it copies site B onto site A's
running servers, so it needs them; with no `up` running it refuses): site
A's sealed streams exported to `dr/site-a-epoch-<n>/` (one JSON line per
message, `SHA256SUMS`) and replaced by mirrors of B's, a bounded wait until A
holds what B holds, then the next epoch with site A primary (B fenced and
sealed, A's mirrors promoted, every service restarted against A,
`dr_failback` recorded), and B's sealed streams exported the same way and
replaced by mirrors of A's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from ironbook.adapters.nats.localproc import LOOPBACK
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.adapters.nats.security import NatsCredentials, SecretsError
from ironbook.adapters.nats.server import CLUSTER_FILE, ClusterLayout
from ironbook.bootstrap import settings_from
from ironbook.chaos.drill import MIN_DURATION_S, DrillOptions, DrillReport, require_fresh
from ironbook.chaos.drill_modes import DR_MODES, ModesReport, run_modes
from ironbook.chaos.drill_report import summary_lines, write_drill_report
from ironbook.chaos.history import read_history
from ironbook.chaos.stretch_drill import StretchDrillReport
from ironbook.cli.up import add_data_dir_argument
from ironbook.services import dr as dr_site
from ironbook.services import stretch as stretch_site
from ironbook.services.control import CONTROL_SOCKET, ControlError, ControlRequest, request
from ironbook.settings import ConfigError, Settings

DRILL_HELP = """A DR drill on a fresh DR pair of its own (docs/dr.md, "Drills").

Starts site A, site B and the WAN relay (as `ironbook up --dr-site`), runs
the chaos workload against site A, cuts site A off at a seeded moment in the
first half of the duration (SIGKILL of its three nats-servers and every
service connected to it), detects the loss as `dr status` would (site A
unreachable and B's mirror silent for 3 s), promotes B by `dr promote --site
b`'s own code, keeps the workload going against B, then checks the whole
history against B's log. Acknowledged operations B's log lacks are counted
(rpo_acked_lost), not hidden; one acknowledged by B and missing fails it.
Then site A comes back, is failed back to (`dr failback`'s own code), and the
history is checked again against A's log.

--dr-mode stretch drills a stretch cluster instead (sites a, b, c; one site
cut off, the other two go on: RPO 0); --dr-mode both runs the mirror drill,
then the stretch drill, with the same seed, duration, RTT and clients, and
reports stretch's bets/s over mirror's (stretch_vs_mirror).

JSON (--json): mode, verdict, rto_s, rpo_acked_lost, rpo_s, failback_s,
bets_per_s, ops, duplicated, conserved, wan_rtt_ms (measured), detect_s,
promote_s, cut_at_s, ... (every field in docs/dr.md). drill-report.json, .md
and .png go in the data dir (or --report-dir; stretch: stretch-drill.json).
Exit 0 on a passing verdict, 1 on a failing one, 2 on bad usage.
"""


def _layout(nats_dir: Path) -> ClusterLayout:
    return msgspec.json.decode((nats_dir / CLUSTER_FILE).read_bytes(), type=ClusterLayout)


def _site_url(nats_dir: Path) -> str:
    return ",".join(
        f"nats://{LOOPBACK}:{ports.client}" for ports in _layout(nats_dir).nodes.values()
    )


def measured_link_rtts_ms(nats_dir: Path) -> list[float]:
    """The leafnode links' round-trip times as site B's servers measure them
    (through the relay: the WAN RTT)."""
    return dr_site.measured_link_rtts_ms(
        [f"http://{LOOPBACK}:{ports.http}" for ports in _layout(nats_dir).nodes.values()]
    )


def _endpoint(settings: Settings, url: str) -> NatsEndpoint:
    if not settings.nats.secure:
        return NatsEndpoint(url)
    return NatsEndpoint(url, NatsCredentials.load(settings.nats_secrets_dir, "ops"))


def gather(settings: Settings) -> dict[str, Any]:
    """The DR view of the data directory `settings` name, as JSON-able data."""
    data_dir = settings.cluster.data_dir.resolve()
    layout = dr_site.read_site(data_dir)
    primary = dr_site.read_primary(data_dir)
    streams = layout.streams
    site_a = _endpoint(settings, _site_url(data_dir / "nats"))
    site_b = _endpoint(settings, _site_url(dr_site.dr_dir(data_dir) / "nats"))

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        async with asyncio.TaskGroup() as group:
            on_a = group.create_task(dr_site.stream_states(site_a, streams))
            on_b = group.create_task(dr_site.stream_states(site_b, streams))
        return on_a.result(), on_b.result()

    on_a, on_b = asyncio.run(both())
    rows = []
    for stream in streams:
        origin, mirror = on_a[stream], on_b[stream]
        # Site B mirrors A, except while a failback re-seeds A from B.
        mirror_site = next(
            (
                site
                for site, state in ((dr_site.SITE_B, mirror), (dr_site.SITE_A, origin))
                if state is not None and state.is_mirror
            ),
            None,
        )
        mirroring = {dr_site.SITE_A: origin, dr_site.SITE_B: mirror}.get(mirror_site or "")
        rows.append(
            {
                "stream": stream,
                "origin_last_seq": None if origin is None else origin.last_seq,
                "origin_sealed": None if origin is None else origin.sealed,
                "mirror_last_seq": None if mirror is None else mirror.last_seq,
                "mirror": None if mirror is None else mirror.is_mirror,
                "mirror_sealed": None if mirror is None else mirror.sealed,
                "mirror_site": mirror_site,
                "lag_entries": None if mirroring is None else mirroring.lag_entries,
                "active_s": None if mirroring is None else mirroring.active_s,
            }
        )
    rtts = measured_link_rtts_ms(dr_site.dr_dir(data_dir) / "nats")
    return {
        "data_dir": str(data_dir),
        "primary": msgspec.to_builtins(primary),
        "wan_rtt_ms": layout.wan_rtt_ms,
        "link_rtt_ms": sorted(round(rtt, 1) for rtt in rtts),
        "site_a_reachable": any(state is not None for state in on_a.values()),
        "site_b_reachable": any(state is not None for state in on_b.values()),
        "streams": rows,
    }


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def gather_stretch(settings: Settings) -> dict[str, Any]:
    """The stretch view of the data directory `settings` name (`services.stretch`)."""
    data_dir = settings.cluster.data_dir.resolve()
    view = asyncio.run(
        stretch_site.stretch_view(data_dir, _endpoint(settings, _site_url(data_dir / "nats")))
    )
    return {"data_dir": str(data_dir), **view}


def _print_stretch(view: dict[str, Any]) -> None:
    rtts = view["route_rtt_ms"]
    measured = f"{min(rtts)}-{max(rtts)} ms" if rtts else "no route up"
    print(
        f"stretch mode: one cluster over sites {', '.join(sorted(set(view['sites'].values())))}; "
        f"WAN RTT {view['wan_rtt_ms']} ms (routes measure {measured})\n"
    )
    print(f"{'node':<6} {'site':<5} {'tag says':<9} {'up':<5} {'routes':>6}  route RTT ms")
    for node in view["nodes"]:
        print(
            f"{node['name']:<6} {node['site']:<5} {_show(node['tagged_site']):<9} "
            f"{'up' if node['up'] else 'DOWN':<5} {node['routes']:>6}  "
            f"{', '.join(str(rtt) for rtt in node['route_rtt_ms']) or '-'}"
        )
    if not view["cluster_reachable"]:
        print("\nthe cluster did not answer: no stream placement")
        return
    print(f"\n{'stream':<28} {'leader':<7} servers (sites)")
    for row in view["streams"]:
        servers = ", ".join(
            f"{server} ({_show(site)})"
            for server, site in zip(row["servers"], row["sites"], strict=True)
        )
        flag = "" if row["one_per_site"] else "  NOT ONE PER SITE"
        print(f"{row['stream']:<28} {_show(row['leader']):<7} {servers}{flag}")
    print("\nevery stream one replica per site" if view["one_per_site"] else "\nMISPLACED")


def _print(view: dict[str, Any]) -> None:
    primary = view["primary"]
    measured = ", ".join(f"{rtt} ms" for rtt in view["link_rtt_ms"]) or "no link up"
    print(
        f"primary: site {primary['site']} (epoch {primary['epoch']}); WAN RTT "
        f"{view['wan_rtt_ms']} ms (links measure {measured}); "
        f"site a {'up' if view['site_a_reachable'] else 'UNREACHABLE'}, "
        f"site b {'up' if view['site_b_reachable'] else 'UNREACHABLE'}\n"
    )
    print(
        f"{'stream':<28} {'a last seq':>11} {'b last seq':>11} {'lag':>6} {'active s':>9}  mirror"
    )
    for row in view["streams"]:
        role = "-" if row["mirror_site"] is None else f"site {row['mirror_site']}"
        print(
            f"{row['stream']:<28} {_show(row['origin_last_seq']):>11} "
            f"{_show(row['mirror_last_seq']):>11} {_show(row['lag_entries']):>6} "
            f"{_show(row['active_s']):>9}  {role}"
        )


def _status(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        if stretch_site.has_stretch(settings.cluster.data_dir.resolve()):
            view = gather_stretch(settings)
        else:
            view = gather(settings)
    except (ConfigError, dr_site.DrError, SecretsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(view, indent=2))
    elif view.get("mode") == "stretch":
        _print_stretch(view)
    else:
        _print(view)
    if view.get("mode") == "stretch":
        return 0 if view["cluster_reachable"] and view["one_per_site"] else 1
    return 0 if view["site_b_reachable"] else 1


def _promote(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data_dir = settings.cluster.data_dir.resolve()
    if stretch_site.has_stretch(data_dir):
        print(
            f"error: {data_dir} is a stretch cluster: every site holds every acknowledged entry "
            "and the cluster serves while two sites are up; there is no site to promote",
            file=sys.stderr,
        )
        return 2
    if not dr_site.has_dr_site(data_dir):
        print(f"error: {data_dir} has no DR site (`ironbook up --dr-site`)", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    if (data_dir / CONTROL_SOCKET).exists():
        try:
            answer = asyncio.run(
                request(data_dir, ControlRequest(op="dr_promote", site=args.site), say)
            )
        except ControlError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    else:
        try:
            record = dr_site.next_primary(data_dir, args.site)
        except dr_site.DrError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if record.epoch > 2:
            # After a failback, whether site B mirrors A again (or its
            # re-seeding stopped half way) only the running pair can tell.
            print(
                f"error: site a is primary again (epoch {record.epoch - 1}): with no `ironbook "
                "up --dr-site` running nobody can check that site b holds what site a holds; "
                "start the pair, then promote",
                file=sys.stderr,
            )
            return 1
        dr_site.write_primary(data_dir, record)
        answer = {
            "done": [
                f"primary.json: site {record.site}, epoch {record.epoch}",
                "no `ironbook up` runs here: the next `ironbook up --dr-site` fences and seals "
                "site a, promotes site b's mirrors and serves from site b",
            ],
            "took_ms": 0,
        }
    if args.json:
        print(json.dumps({"site": args.site, **answer}))
    else:
        for step in answer["done"]:
            print(f"  {step}")
        print(f"site {args.site} is primary ({answer['took_ms']} ms)")
    return 0


def _drill(args: argparse.Namespace) -> int:
    try:
        options = DrillOptions(
            data_dir=args.data_dir or Path("."),
            seed=args.seed,
            duration_s=args.duration,
            wan_rtt_ms=args.wan_rtt_ms,
            clients=args.clients,
        )
        if args.data_dir is None:
            options = replace(options, data_dir=Path(tempfile.mkdtemp(prefix="ironbook-drill-")))
        require_fresh(options.data_dir.resolve())
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        report = asyncio.run(run_modes(args.dr_mode, options, say))
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mirror = report.mirror if isinstance(report, ModesReport) else report
    files = []
    if isinstance(mirror, DrillReport):
        report_dir = args.report_dir or Path(mirror.data_dir)
        try:
            files = write_drill_report(mirror, read_history(Path(mirror.history)), report_dir)
        except OSError as err:
            print(f"error: the report could not be written to {report_dir}: {err}", file=sys.stderr)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        for line in _drill_lines(report):
            print(line)
        if files:
            print(f"report: {', '.join(str(path) for path in files)}")
    return 0 if report.verdict == "pass" else 1


def _drill_lines(report: DrillReport | StretchDrillReport | ModesReport) -> list[str]:
    if isinstance(report, DrillReport):
        return summary_lines(report)
    if isinstance(report, StretchDrillReport):
        return [
            f"VERDICT: {report.verdict.upper()} (dr drill, stretch mode, seed {report.seed}): "
            f"site {report.cut_site} cut off at {report.cut_at_s:g} s",
            f"rto_s {report.rto_s}; rpo_acked_lost {report.rpo_acked_lost}, rpo_s "
            f"{report.rpo_s}; {report.ops:,} operations, duplicated {report.duplicated}, "
            f"conserved {report.conserved}; {report.bets_per_s:g} bets/s; "
            f"WAN RTT {report.wan_rtt_ms} ms (routes); one replica per site: {report.one_per_site}",
            *(f"error: {error}" for error in report.errors),
        ]
    ratios = report.stretch_vs_mirror
    return [
        *_drill_lines(report.mirror),
        *_drill_lines(report.stretch),
        f"VERDICT: {report.verdict.upper()} (both modes); stretch over mirror: bets/s "
        f"{ratios['bets_per_s']} ({ratios['stretch_bets_per_s']} against "
        f"{ratios['mirror_bets_per_s']})",
    ]


def _failback(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data_dir = settings.cluster.data_dir.resolve()
    if not dr_site.has_dr_site(data_dir):
        print(f"error: {data_dir} has no DR site (`ironbook up --dr-site`)", file=sys.stderr)
        return 2
    if not (data_dir / CONTROL_SOCKET).exists():
        print(
            f"error: no `ironbook up --dr-site` runs from {data_dir}: a failback copies site b "
            "onto site a's running servers; start the pair, then fail back",
            file=sys.stderr,
        )
        return 1

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    try:
        answer = asyncio.run(request(data_dir, ControlRequest(op="dr_failback"), say))
    except ControlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = answer["report"]
    if args.json:
        print(json.dumps({**report, "took_ms": answer["took_ms"]}))
    else:
        copied = ", ".join(f"{name} {count}" for name, count in report["copied_entries"].items())
        print(f"site a is primary (epoch {report['epoch']}) after {report['failback_s']:.1f} s")
        print(f"  entries on site a: {copied}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dr",
        help="the DR layout: mirror lag, promotion, failback and drills, "
        "or a stretch cluster's sites",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dr_command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="per stream: origin, mirror, lag; the primary (stretch: sites, route RTTs, "
        "each stream's replicas per site)",
    )
    add_data_dir_argument(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=_status)
    promote = commands.add_parser("promote", help="make site b primary and fence site a")
    add_data_dir_argument(promote)
    promote.add_argument("--site", required=True, choices=[dr_site.SITE_B], help="the site")
    promote.add_argument("--json", action="store_true", help="print one JSON object")
    promote.set_defaults(func=_promote)
    drill = commands.add_parser(
        "drill",
        help="a DR drill: site a cut off under load, site b promoted, the history checked",
        description=DRILL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill.add_argument(
        "--seed", type=int, default=1, help="seeds the cut's moment and the workload (default 1)"
    )
    drill.add_argument(
        "--duration",
        type=float,
        default=120.0,
        help=f"seconds of workload, at least {MIN_DURATION_S:g} (default 120); the cut comes "
        "within the first half",
    )
    drill.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="a fresh directory for both sites, history.jsonl and the report "
        "(default: a new temp dir, kept)",
    )
    drill.add_argument(
        "--wan-rtt-ms",
        type=int,
        default=30,
        help="the round-trip time the WAN relay adds between the sites (default 30)",
    )
    drill.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    drill.add_argument(
        "--dr-mode",
        choices=DR_MODES,
        default="mirror",
        help="mirror: site b mirrors site a asynchronously (default); stretch: one cluster "
        "over sites a, b, c; both: the two, one after the other, with the ratio of bets/s",
    )
    drill.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where drill-report.json, .md and .png go (default: the data dir)",
    )
    drill.add_argument("--json", action="store_true", help="print the report as one JSON object")
    drill.set_defaults(func=_drill)
    back = commands.add_parser(
        "failback",
        help="make site a primary again once it holds what site b holds; b mirrors a again",
        description="Asks the running `ironbook up --dr-site`: site a's sealed streams "
        "exported to <data-dir>/dr/site-a-epoch-<n>/ and replaced by mirrors of site b, "
        "a bounded wait until they hold what b holds, then site a primary in the next "
        "epoch (b fenced and sealed, a's mirrors promoted, services restarted against a, "
        "dr_failback recorded), and b's sealed streams exported and replaced by mirrors "
        "of a. Needs site b primary and site a's servers running.",
    )
    add_data_dir_argument(back)
    back.add_argument("--json", action="store_true", help="print one JSON object")
    back.set_defaults(func=_failback)
