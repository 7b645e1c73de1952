"""Serving one gateway worker's application over HTTP.

Several workers share one port: each binds its own socket with SO_REUSEPORT
and the kernel spreads connections over them, so a worker that dies takes
only its own connections with it while the supervisor restarts it. The
worker is assembled by the composition root: `python -m ironbook.bootstrap
gateway --port PORT ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from fastapi import FastAPI

from ironbook.services.gateway.odds import MAX_CLIENT_MESSAGE_BYTES
from ironbook.settings import GatewaySettings

LISTEN_BACKLOG = 4096


class RedactQueryStrings(logging.Filter):
    """uvicorn logs every WebSocket handshake with its path and query string;
    a token sent there (refused, but sent) must never reach a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{arg.split('?', 1)[0]}?<redacted>" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


_REDACT_QUERY_STRINGS = RedactQueryStrings()


def reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


async def serve_http(app: FastAPI, settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Serve `app` on the shared port until `stop` is set or a SIGTERM /
    SIGINT arrives (uvicorn catches those while it serves, then raises them
    again), then finish the requests in progress (at most 5 s) and return."""
    sock = reuseport_socket(settings.host, settings.port)
    logging.getLogger("uvicorn.error").addFilter(_REDACT_QUERY_STRINGS)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        server_header=False,  # do not advertise the server software
        proxy_headers=False,  # the edge reads X-Forwarded-For itself, when trusted
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        # Past this many connections and requests at once a worker answers
        # 503 at once rather than queueing (a flood, or slow clients).
        limit_concurrency=settings.limit_concurrency,
        ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
    )
    server = uvicorn.Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    with contextlib.closing(sock):
        async with asyncio.TaskGroup() as group:
            group.create_task(exit_on_stop())
            await server.serve(sockets=[sock])
            stop.set()
