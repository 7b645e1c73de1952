"""`GET /metrics` over plain HTTP on one port, for processes that have no web
framework of their own (replicas, the NATS collector), and the registry every
ironbook process starts its metrics from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, ProcessCollector

from ironbook.replication.concurrency import wait_for

_READ_LIMIT = 8 * 1024
_REQUEST_TIMEOUT_S = 5.0


def process_registry() -> CollectorRegistry:
    """A registry holding the standard process metrics (`process_start_time_seconds`,
    CPU seconds, resident memory, open files): `IronbookProcessRestarted` watches
    the start time."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


Render = Callable[[], Awaitable[tuple[bytes, str]]]
"""Produces (body, content type) for one scrape."""


async def serve_http(
    render: Render, host: str, port: int, *, reuse_port: bool = False
) -> asyncio.Server:
    """Answer `GET /metrics` on `host:port` (0: a free port) with `render()`;
    anything else gets 404. One request per connection. `reuse_port`: several
    processes share the port (gateway workers), any of them answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            line = request[: request.find(b"\r\n")].split(b" ")
            if len(line) == 3 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, content_type = await render()
                answer = b"200 OK"
            else:
                answer, content_type, body = b"404 Not Found", "text/plain", b"not found\n"
            writer.write(
                b"HTTP/1.1 " + answer + b"\r\nContent-Type: " + content_type.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            # The event loop is ending with a scrape in progress. Ending the
            # handler quietly: Python 3.11's stream server logs a traceback
            # for every handler task that ends cancelled.
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(
        handle, host, port, limit=_READ_LIMIT, reuse_port=reuse_port or None
    )
