"""Planned work on a running `LocalCluster` without a write gap: drain one
process (its leaderships leave first, then it stops) and restart every
process one by one, waiting for health before the next.

- A NATS server: every stream it leads is handed to another server
  (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>` with a preferred placement), the
  JetStream meta leadership too if it holds it (`$JS.API.META.LEADER.STEPDOWN`,
  which only the system account may ask; otherwise lame-duck mode hands it
  over), then lame-duck mode (`nats-server --signal ldm=<pid>`): ironbook's
  connections move to the other servers when it says so (`connect_nats`);
  once it has no clients left it is stopped.
  A stream stepdown takes well under a second; a crashed leader costs a Raft
  election (4-9 s, hard-coded in nats-server).
- A replica: SIGTERM; a leader releases its lease as it stops, and a
  follower takes over without waiting for the lease to expire. A rolling
  restart restarts the followers first and waits until each has caught up
  again, so that the one taking over from the leader has the whole log.
- A gateway worker: SIGTERM (the others share its port and keep serving);
  a history projector or a feed process: SIGTERM.

The supervisor leaves a process alone while it is under maintenance
(`Supervisor.held`). Processes are only ever signalled by their own PID.

Planned work is announced, not paged: with monitoring, each step posts an
`IronbookMaintenance` notice (severity `info`, labelled with the process's
`name`) to the cluster's Alertmanager for as long as it lasts and
`NOTICE_GRACE_S` after, and Alertmanager's inhibition keeps the page and
ticket alerts of that same process quiet meanwhile.

Alertmanager cannot shorten a notice that still fires: when two posts of
one alert merge, the later end wins. So the work's notice (`stage="work"`,
posted to last far longer than any step) is ended by resolving it, and the
grace after it is a second notice (`stage="after"`) that ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import NatsSignalError
from ironbook.adapters.prometheus import AlertmanagerError, post_alerts, rfc3339
from ironbook.services.local_cluster import LocalCluster, collect_heartbeats

RollingWhat = Literal["nats", "replicas", "gateways", "all"]
ROLLING_WHAT: tuple[RollingWhat, ...] = get_args(RollingWhat)

STEPDOWN_TIMEOUT_MS = 5_000
META_TIMEOUT_MS = 1_000
LEADERSHIPS_GONE_TIMEOUT_MS = 15_000
STOP_TIMEOUT_MS = 20_000
CLIENTS_GONE_TIMEOUT_MS = 5_000
"""How long a server in lame-duck mode is given for its clients to move
away before it stops. It tells them once it has handed over its Raft
leaderships (and waited a second if it had any); ironbook's connections
move at once. A client that does not is cut off by the stop."""
REPLICA_STOP_GRACE_MS = 5_000
"""A replica that has not stopped this long after SIGTERM is killed: its
lease then expires within a TTL instead of being held by a stuck stop."""
HEALTHY_TIMEOUT_MS = 120_000
CAUGHT_UP_LAG = 50
"""A restarted replica counts as caught up within this many log entries."""
SETTLE_S = 1.0
"""After a gateway or projector restart: time for it to open its port or subscription."""
NOTICE_GRACE_S = 30.0
"""A maintenance notice outlasts its work by this long, so that what the work
leaves behind (a restarted server catching up, a rate whose window still
holds the stop) stays quiet too."""
NOTICE_STEP_S = 600.0
"""How long a notice lasts if nothing ends it (the announcer died): longer
than any one step may take."""
NOTICE_DRAINED_S = 3_600.0
"""A drained process's notice: a process left drained longer than this
is paged about again."""

log = logging.getLogger("ironbook.maintenance")


class MaintenanceError(RuntimeError):
    """A drain or restart step did not complete in time."""


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


NoticeStage = Literal["work", "after"]


def _notice(
    name: str, action: str, stage: NoticeStage, starts_s: float, ends_s: float
) -> dict[str, object]:
    summary = f"planned maintenance of {name}: {action}"
    return {
        "labels": {
            "alertname": "IronbookMaintenance",
            "severity": "info",
            "name": name,
            "action": action,
            "stage": stage,
        },
        "annotations": {"summary": summary if stage == "work" else f"{summary} (just done)"},
        "startsAt": rfc3339(starts_s),
        "endsAt": rfc3339(ends_s),
    }


async def announce(alertmanager_url: str | None, name: str, action: str, lasts_s: float) -> None:
    """Post (or renew) the notice of maintenance work on process `name`, to
    last `lasts_s` unless `conclude` ends it first. Without monitoring there
    is no one to tell; if Alertmanager cannot be reached the work goes on
    and a warning says so."""
    now = time.time()
    await _post(alertmanager_url, name, [_notice(name, action, "work", now, now + lasts_s)])


async def conclude(
    alertmanager_url: str | None, name: str, action: str, grace_s: float = NOTICE_GRACE_S
) -> None:
    """End the notice of the work on `name` now, and cover the `grace_s`
    after it with an `after` notice that ends by itself."""
    now = time.time()
    notices = [
        _notice(name, action, "work", now, now),
        _notice(name, action, "after", now, now + grace_s),
    ]
    await _post(alertmanager_url, name, notices)


async def _post(alertmanager_url: str | None, name: str, notices: list[dict[str, object]]) -> None:
    if alertmanager_url is None:
        return
    try:
        await asyncio.to_thread(post_alerts, alertmanager_url, notices)
    except AlertmanagerError as error:
        log.warning("maintenance notice for %s not posted: %s", name, error)


def _alertmanager_of(cluster: LocalCluster) -> str | None:
    return None if cluster.monitoring is None else cluster.monitoring.alertmanager_url


@contextlib.asynccontextmanager
async def under_maintenance(cluster: LocalCluster, node: str, action: str) -> AsyncIterator[None]:
    """While the block runs, the supervisor leaves `node` alone (the block
    stops and starts it itself), and its maintenance is announced, until
    `NOTICE_GRACE_S` after the block."""
    await announce(_alertmanager_of(cluster), node, action, NOTICE_STEP_S)
    try:
        with cluster.supervisor.held(_supervised_name(cluster, node)):
            yield
    finally:
        await conclude(_alertmanager_of(cluster), node, action)


def _supervised_name(cluster: LocalCluster, node: str) -> str:
    return f"nats-{node}" if node in cluster.nats.nodes else node


def node_kind(cluster: LocalCluster, node: str) -> str:
    """`nats`, `replica`, `gateway` (workers and history projectors) or `feed`;
    `MaintenanceError` for a name the cluster does not have."""
    if node in cluster.nats.nodes:
        return "nats"
    if node in cluster.replicas:
        return "replica"
    if node in cluster.gateways:
        return "gateway"
    if node in cluster.feeds:
        return "feed"
    names = [*cluster.nats.nodes, *cluster.replicas, *cluster.gateways, *cluster.feeds]
    raise MaintenanceError(f"no process {node!r} in this cluster (one of: {', '.join(names)})")


# -- NATS ---------------------------------------------------------------


def streams_led_by(cluster: LocalCluster, node: str, asked: str | None = None) -> list[str]:
    """The streams `node` leads, as `asked` sees them (default: `node` itself,
    on its own monitoring port)."""
    status, body = cluster.nats.node(asked or node).monitor("/jsz?accounts=true&streams=true")
    if status != 200 or not isinstance(body, dict):
        return []
    led = []
    for account in body.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            leader = (detail.get("cluster") or {}).get("leader")
            if leader == node:
                led.append(str(detail["name"]))
    return sorted(led)


async def move_stream_leader(nc: NatsClient, stream: str, preferred: str | None) -> None:
    """Ask `stream`'s leader to step down, for `preferred` if given."""
    payload = b"" if preferred is None else json.dumps({"placement": {"preferred": preferred}})
    reply = await _js_api(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", payload)
    if not reply.get("success"):
        raise MaintenanceError(f"stepdown of {stream} refused: {reply.get('error')}")


async def _js_api(
    nc: NatsClient, subject: str, payload: bytes | str, timeout_ms: int = STEPDOWN_TIMEOUT_MS
) -> dict[str, Any]:
    data = payload.encode() if isinstance(payload, str) else payload
    try:
        message = await nc.request(subject, data, timeout=timeout_ms / 1000)
    except (NatsError, TimeoutError) as error:
        raise MaintenanceError(f"{subject}: {error!r}") from error
    reply: dict[str, Any] = json.loads(message.data or b"{}")
    return reply


async def move_leaderships_off(
    cluster: LocalCluster,
    node: str,
    say: Say = _quiet,
    keep: Sequence[str] = (),
    *,
    seen_by_others: bool = False,
) -> list[str]:
    """Hand every stream `node` leads (but those in `keep`) to the other
    running servers, in turn, and its meta leadership if it holds it;
    wait until it leads none of them. What was done, one line each.
    `seen_by_others`: which streams `node` leads is asked of the other
    servers, not of `node` (a degraded server may not answer in time)."""
    nats = cluster.nats
    others = [n.name for n in nats.running_nodes() if n.name != node]
    if not others:
        raise MaintenanceError(f"no other NATS server is running to take over from {node}")

    def led() -> list[str]:
        askers = others if seen_by_others else [node]
        seen = {s for asked in askers for s in streams_led_by(cluster, node, asked)}
        return sorted(seen - set(keep))

    done = []
    nc = await connect_nats(
        [nats.node(name).url for name in others],
        credentials=cluster.credentials("ops"),
        name="ironbook-drain",
    )
    try:
        streams = await asyncio.to_thread(led)
        for index, stream in enumerate(streams):
            target = others[index % len(others)]
            started = time.monotonic()
            await move_stream_leader(nc, stream, target)
            done.append(f"{stream}: leader {node} -> {target} asked")
            say(f"{stream}: stepdown asked in {(time.monotonic() - started) * 1000:.0f} ms")
        if await asyncio.to_thread(nats.meta_leader) == node:
            done.append(await _move_meta_leader(nc, node, others[0]))
        deadline = time.monotonic() + LEADERSHIPS_GONE_TIMEOUT_MS / 1000
        while True:
            left = await asyncio.to_thread(led)
            if not left:
                break
            if time.monotonic() > deadline:
                raise MaintenanceError(f"{node} still leads {left} after the stepdowns")
            await asyncio.sleep(0.05)
    finally:
        await close_nats(nc)
    return done


async def _move_meta_leader(nc: NatsClient, node: str, preferred: str) -> str:
    """Only the system account may ask the meta leader to step down (a
    client of another account hears nothing back); lame-duck mode hands the
    meta leadership over in any case."""
    request = json.dumps({"placement": {"preferred": preferred}})
    try:
        reply = await _js_api(nc, "$JS.API.META.LEADER.STEPDOWN", request, META_TIMEOUT_MS)
    except MaintenanceError:
        return f"meta leader {node}: no answer to a stepdown (not the system account); lame duck"
    if reply.get("success"):
        return f"meta leader {node} -> {preferred} asked"
    return f"meta leader {node}: stepdown refused ({reply.get('error')}); lame duck"


async def drain_nats(cluster: LocalCluster, node: str, say: Say = _quiet) -> list[str]:
    """Move `node`'s leaderships away, put it in lame-duck mode, stop it.
    The caller restarts it (or not); the supervisor must hold it."""
    done = await move_leaderships_off(cluster, node, say)
    process = cluster.nats.node(node).process
    pid = process.pid
    if pid is None or not process.is_running():
        raise MaintenanceError(f"NATS server {node} is not running")
    try:
        await asyncio.to_thread(cluster.nats.lame_duck, node)
    except NatsSignalError as error:
        raise MaintenanceError(str(error)) from error
    done.append(f"{node} (pid {pid}) in lame-duck mode")
    # In lame-duck mode the server hands over what it still leads (the meta
    # leadership, groups created since), then tells its clients, and
    # ironbook's connections move to another server (`connect_nats`). A
    # client still connected when the server stops loses its requests in
    # flight: the ledger leader's appends, and every write behind them.
    deadline = time.monotonic() + LEADERSHIPS_GONE_TIMEOUT_MS / 1000
    while await asyncio.to_thread(_leads_anything, cluster, node):
        if time.monotonic() > deadline:
            break  # stopping hands the rest over too
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + CLIENTS_GONE_TIMEOUT_MS / 1000
    while clients := await asyncio.to_thread(clients_of, cluster, node):
        if time.monotonic() > deadline:
            done.append(f"{node}: {clients} clients still connected; stopping")
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(process.stop, STOP_TIMEOUT_MS)
    done.append(f"{node} stopped")
    say(f"{node} drained and stopped")
    return done


def clients_of(cluster: LocalCluster, node: str) -> int:
    """How many clients are connected to `node` (0 if it does not answer)."""
    status, body = cluster.nats.node(node).monitor("/connz")
    if status != 200 or not isinstance(body, dict):
        return 0
    return int(body.get("num_connections") or 0)


def _leads_anything(cluster: LocalCluster, node: str) -> bool:
    return cluster.nats.meta_leader() == node or bool(streams_led_by(cluster, node))


async def restart_nats(cluster: LocalCluster, node: str, say: Say = _quiet) -> list[str]:
    """Drain `node`, start it again, and wait until it is current."""
    async with under_maintenance(cluster, node, "restart"):
        done = await drain_nats(cluster, node, say)
        await asyncio.to_thread(cluster.nats.start_node, node, wait=False)
        await asyncio.to_thread(cluster.nats.wait_healthy, HEALTHY_TIMEOUT_MS)
    done.append(f"{node} restarted and healthy")
    say(f"{node} restarted and healthy")
    return done


# -- ledger replicas ----------------------------------------------------


async def _roles(cluster: LocalCluster) -> dict[str, tuple[str, int]]:
    beats = await collect_heartbeats(cluster.ops, 1_500)
    return {node_id: (beat.role, beat.applied_seq) for node_id, beat in beats.items()}


async def drain_replica(cluster: LocalCluster, node_id: str, say: Say = _quiet) -> list[str]:
    """Stop a replica gracefully; a leader releases its lease as it stops,
    and the caught-up followers campaign for it at once."""
    process = cluster.replicas[node_id]
    role = (await _roles(cluster)).get(node_id, ("unknown", 0))[0]
    process.terminate()
    if await asyncio.to_thread(process.wait, REPLICA_STOP_GRACE_MS):
        done = f"{node_id} ({role}) stopped"
    else:
        await asyncio.to_thread(process.kill)
        done = f"{node_id} ({role}) killed: still stopping after {REPLICA_STOP_GRACE_MS} ms"
    say(done)
    return [done]


async def _wait_caught_up(cluster: LocalCluster, node_id: str) -> None:
    partition = int(node_id[1:].split("-", maxsplit=1)[0])
    deadline = time.monotonic() + HEALTHY_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        roles = await _roles(cluster)
        mine = {n: roles[n] for n in cluster.replica_ids(partition) if n in roles}
        leader_seq = max((seq for role, seq in mine.values() if role == "leader"), default=None)
        if (
            node_id in mine
            and leader_seq is not None
            and leader_seq - mine[node_id][1] <= CAUGHT_UP_LAG
        ):
            return
    raise MaintenanceError(f"{node_id} did not catch up in {HEALTHY_TIMEOUT_MS} ms")


async def restart_replica(cluster: LocalCluster, node_id: str, say: Say = _quiet) -> list[str]:
    async with under_maintenance(cluster, node_id, "restart"):
        done = await drain_replica(cluster, node_id, say)
        await asyncio.to_thread(cluster.replicas[node_id].start)
        await _wait_caught_up(cluster, node_id)
    done.append(f"{node_id} restarted and caught up")
    say(f"{node_id} restarted and caught up")
    return done


async def _replica_order(cluster: LocalCluster) -> list[str]:
    """Per partition the followers first, the leader last."""
    roles = await _roles(cluster)
    order = []
    for partition in range(cluster.partitions):
        ids = cluster.replica_ids(partition)
        order += sorted(ids, key=lambda n: roles.get(n, ("", 0))[0] == "leader")
    return order


# -- gateways, projectors, feed ----------------------------------------


async def restart_plain(cluster: LocalCluster, name: str, say: Say = _quiet) -> list[str]:
    """A gateway worker, history projector or feed process: stop, start,
    and wait until it touches its liveness file."""
    process = {**cluster.gateways, **cluster.feeds}[name]
    child = cluster.supervisor.children[name]
    async with under_maintenance(cluster, name, "restart"):
        await asyncio.to_thread(process.stop, STOP_TIMEOUT_MS)
        started_wall = time.time()
        await asyncio.to_thread(process.start)
        deadline = time.monotonic() + HEALTHY_TIMEOUT_MS / 1000
        while not _touched_since(child.liveness, started_wall):
            if not process.is_running():
                raise MaintenanceError(f"{name} exited after its restart")
            if time.monotonic() > deadline:
                raise MaintenanceError(f"{name} showed no sign of life after its restart")
            await asyncio.sleep(0.05)
        await asyncio.sleep(SETTLE_S)
    say(f"{name} restarted")
    return [f"{name} restarted"]


def _touched_since(path: Path | None, wall: float) -> bool:
    if path is None:
        return True
    try:
        return path.stat().st_mtime >= wall
    except FileNotFoundError:
        return False


# -- the commands -------------------------------------------------------


async def drain(cluster: LocalCluster, node: str, say: Say = _quiet) -> list[str]:
    """`ironbook drain NODE`: leaderships leave, then the process stops; the
    supervisor holds it stopped until `undrain`."""
    kind = node_kind(cluster, node)
    name = _supervised_name(cluster, node)
    cluster.supervisor.set_drained(name, True)
    await announce(_alertmanager_of(cluster), node, "drain", NOTICE_DRAINED_S)
    if kind == "nats":
        return await drain_nats(cluster, node, say)
    if kind == "replica":
        return await drain_replica(cluster, node, say)
    process = {**cluster.gateways, **cluster.feeds}[node]
    await asyncio.to_thread(process.stop, STOP_TIMEOUT_MS)
    return [f"{node} stopped"]


async def undrain(cluster: LocalCluster, node: str) -> None:
    """Supervise a drained process again: the supervisor starts it; its
    maintenance notice ends `NOTICE_GRACE_S` later."""
    node_kind(cluster, node)
    cluster.supervisor.set_drained(_supervised_name(cluster, node), False)
    await conclude(_alertmanager_of(cluster), node, "drain")


async def rolling_restart(
    cluster: LocalCluster, what: RollingWhat = "all", say: Say = _quiet
) -> list[str]:
    """Restart every process of `what` one by one, each healthy before the
    next: NATS servers (those leading nothing first), replicas (followers
    first), gateway workers and projectors, and with `all` the feed too."""
    done: list[str] = []
    if what in ("nats", "all"):
        led = {
            n: len(await asyncio.to_thread(streams_led_by, cluster, n)) for n in cluster.nats.nodes
        }
        for node in sorted(cluster.nats.nodes, key=lambda n: led[n]):
            done += await restart_nats(cluster, node, say)
    if what in ("replicas", "all"):
        for node_id in await _replica_order(cluster):
            done += await restart_replica(cluster, node_id, say)
    if what in ("gateways", "all"):
        for name in cluster.gateways:
            done += await restart_plain(cluster, name, say)
    if what == "all":
        for name in cluster.feeds:
            done += await restart_plain(cluster, name, say)
    return done
