"""The control socket of `ironbook up`: `<data-dir>/control.sock`, a Unix
socket (only the user running the cluster can open it) through which
`ironbook drain` and `ironbook rolling-restart` ask the process that owns the
children to do maintenance on them (`services.maintenance`).

One JSON request per connection, one line:

    {"op": "drain", "node": "n2"}
    {"op": "undrain", "node": "n2"}
    {"op": "rolling_restart", "what": "all"}
    {"op": "dr_promote", "site": "b"}
    {"op": "dr_failback"}

answered by progress lines `{"say": "..."}` and one last line, `{"done":
[...steps], "took_ms": N}` (a failback adds `"report": {...}`,
`dr_failback.FailbackReport`) or `{"error": "..."}`. One operation runs at a
time; another asked meanwhile is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pwd
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats.errors

from ironbook.adapters.audit.events import NoteEvent
from ironbook.adapters.nats.mirrors import MirrorError
from ironbook.services import dr as dr_site
from ironbook.services import maintenance
from ironbook.services.dr_failback import failback
from ironbook.services.dr_promotion import promote_site_b
from ironbook.services.local_cluster import LocalCluster

log = logging.getLogger("ironbook.control")

CONTROL_SOCKET = "control.sock"
MAX_REQUEST_BYTES = 4_096


class ControlRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    op: Literal["drain", "undrain", "rolling_restart", "dr_promote", "dr_failback"]
    node: str = ""
    what: maintenance.RollingWhat = "all"
    site: str = ""


class ControlError(RuntimeError):
    """No cluster answers on the socket, or it refused the request."""


def control_path(data_dir: Path) -> Path:
    return data_dir / CONTROL_SOCKET


async def serve_control(cluster: LocalCluster, stop: asyncio.Event, note: NoteEvent) -> None:
    """Answer maintenance requests until `stop` is set, noting each step
    done (or the failure) as a significant event of the request's kind."""
    path = control_path(cluster.data_dir)
    path.unlink(missing_ok=True)
    busy = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(message: dict[str, Any]) -> None:
            writer.write(json.dumps(message).encode() + b"\n")

        try:
            line = await reader.readline()
            request = msgspec.json.decode(line[:MAX_REQUEST_BYTES], type=ControlRequest)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as error:
            send({"error": f"not a valid request: {error}"})
        else:
            if busy.locked():
                send({"error": "another maintenance operation is running"})
            else:
                async with busy:
                    await _perform(cluster, request, send, note, _peer(writer))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_unix_server(handle, path=str(path))
    path.chmod(0o600)
    try:
        async with server:
            await stop.wait()
    finally:
        path.unlink(missing_ok=True)


def _peer(writer: asyncio.StreamWriter) -> str:
    """The user at the other end of the socket, as an actor."""
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
        return f"operator:{pwd.getpwuid(uid).pw_name}"
    except (OSError, AttributeError, KeyError):
        return "operator:unknown"


async def _perform(
    cluster: LocalCluster,
    request: ControlRequest,
    send: Callable[[dict[str, Any]], None],
    note: NoteEvent,
    actor: str,
) -> None:
    """One request at a time, and never while a remediation acts
    (`LocalCluster.operations`): it waits for the one under way."""
    if cluster.operations.locked():
        send({"say": "waiting for the operation or remediation under way to finish"})
    async with cluster.operations:
        await _perform_alone(cluster, request, send, note, actor)


async def _perform_alone(
    cluster: LocalCluster,
    request: ControlRequest,
    send: Callable[[dict[str, Any]], None],
    note: NoteEvent,
    actor: str,
) -> None:
    started = time.monotonic()
    log.warning(json.dumps({"event": "maintenance.started", **msgspec.to_builtins(request)}))

    def say(line: str) -> None:
        send({"say": line})

    target = request.node if request.op != "rolling_restart" else request.what
    if request.op == "dr_promote":
        await _promote(cluster, request, send, actor, started)
        return
    if request.op == "dr_failback":
        await _failback(cluster, send, actor, started)
        return

    try:
        if request.op == "drain":
            done = await maintenance.drain(cluster, request.node, say)
        elif request.op == "undrain":
            await maintenance.undrain(cluster, request.node)
            done = [f"{request.node} supervised again"]
        else:
            done = await maintenance.rolling_restart(cluster, request.what, say)
    except maintenance.MaintenanceError as error:
        log.error(json.dumps({"event": "maintenance.failed", "error": str(error)}))
        note(request.op, actor, f"{request.op} asked; failed: {error}", target)
        send({"error": str(error)})
        return
    for step in done:
        note(request.op, actor, f"{request.op} asked", target, step)
    took_ms = int((time.monotonic() - started) * 1000)
    log.warning(json.dumps({"event": "maintenance.done", "steps": done, "took_ms": took_ms}))
    cluster.write_runtime()
    send({"done": done, "took_ms": took_ms})


HALF_DONE = (
    "if primary.json already names the new primary, restart `ironbook up --dr-site` "
    "to finish the switch"
)


async def _promote(
    cluster: LocalCluster,
    request: ControlRequest,
    send: Callable[[dict[str, Any]], None],
    actor: str,
    started: float,
) -> None:
    """Its `dr_takeover` event is written to site B by the promotion itself."""
    try:
        if request.site != dr_site.SITE_B:
            raise dr_site.DrError(
                f"only site b can be promoted, not {request.site!r} "
                "(site a becomes primary again with `ironbook dr failback`)"
            )
        done = await promote_site_b(cluster, actor, lambda line: send({"say": line}))
    except (dr_site.DrError, MirrorError) as error:
        log.error(json.dumps({"event": "dr.promote.failed", "error": str(error)}))
        send({"error": str(error)})
        return
    except Exception as error:  # the operator hears why, whatever it was
        log.exception("dr promote failed")
        send({"error": f"the promotion stopped: {error!r} ({HALF_DONE})"})
        return
    took_ms = int((time.monotonic() - started) * 1000)
    log.warning(json.dumps({"event": "dr.promoted", "steps": done, "took_ms": took_ms}))
    send({"done": done, "took_ms": took_ms})


async def _failback(
    cluster: LocalCluster, send: Callable[[dict[str, Any]], None], actor: str, started: float
) -> None:
    """Its `dr_failback` event is written to site A by the failback itself."""
    try:
        report = await failback(cluster, actor, lambda line: send({"say": line}))
    except (dr_site.DrError, MirrorError, nats.errors.Error, OSError, TimeoutError) as error:
        log.error(json.dumps({"event": "dr.failback.failed", "error": str(error)}))
        send({"error": str(error)})
        return
    except Exception as error:  # the operator hears why, whatever it was
        log.exception("dr failback failed")
        send({"error": f"the failback stopped: {error!r} ({HALF_DONE})"})
        return
    took_ms = int((time.monotonic() - started) * 1000)
    log.warning(json.dumps({"event": "dr.failed_back", "steps": report.steps, "took_ms": took_ms}))
    send({"done": report.steps, "took_ms": took_ms, "report": msgspec.to_builtins(report)})


async def request(
    data_dir: Path, control: ControlRequest, say: Callable[[str], None]
) -> dict[str, Any]:
    """Send `control` to the cluster running from `data_dir`; progress lines
    go to `say`; the last line is returned (`ControlError` for an error)."""
    path = control_path(data_dir)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    except OSError as error:
        raise ControlError(
            f"no cluster answers on {path} (is `ironbook up` running there?): {error}"
        ) from error
    try:
        writer.write(msgspec.json.encode(control) + b"\n")
        await writer.drain()
        while line := await reader.readline():
            message: dict[str, Any] = json.loads(line)
            if "say" in message:
                say(str(message["say"]))
                continue
            if "error" in message:
                raise ControlError(str(message["error"]))
            return message
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    raise ControlError("the cluster closed the control connection without an answer")
