"""Serving the alert receiver and ops console over HTTP on the ops port.

One process on one port (unlike the gateway's workers sharing a port): the
console's state lives in this process. Streams of Server-Sent Events stay
open, so a stop waits at most `GRACEFUL_S` for them.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.applications import Starlette

from ironbook.services.ops.console import Console

log = logging.getLogger("ironbook.ops")

GRACEFUL_S = 2


async def serve(
    app: Starlette, console: Console, host: str, port: int, stop: asyncio.Event
) -> None:
    """Serve `app` on `host:port` and refresh `console` until `stop` is set."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = uvicorn.Server(config)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as group:
        refresher = group.create_task(console.refresh_forever())
        stopper = group.create_task(exit_on_stop())
        try:
            await server.serve()
        finally:
            stop.set()
            refresher.cancel()
            stopper.cancel()
