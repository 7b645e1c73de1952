"""How an ironbook service process runs (replica, feed provider, ingester,
settlement service): logs to stderr, runs its `serve(stop)` on ironbook's
event loop, and turns SIGTERM/SIGINT into `stop` so that it ends gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ironbook.adapters import eventloop

T = TypeVar("T")

log = logging.getLogger("ironbook.process")


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def run_service(
    serve: Callable[[asyncio.Event], Coroutine[Any, Any, T]],
    *,
    exit_if_stuck_after_s: float | None = None,
) -> T:
    """Run `serve(stop)` until it returns; the first SIGTERM or SIGINT sets
    `stop`. With `exit_if_stuck_after_s`, a stop that takes longer than that
    ends the process anyway (see `_exit_if_stuck`)."""

    async def main() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                return
            stop.set()
            if exit_if_stuck_after_s is not None:
                _exit_if_stuck(exit_if_stuck_after_s)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await serve(stop)

    return eventloop.run(main())


def _exit_if_stuck(after_s: float) -> None:
    """End the process `after_s` from now (a daemon thread, so a wedged event
    loop cannot hold it up): an operator's SIGTERM must stop the process."""

    def exit_now() -> None:
        log.warning("still stopping after %.0f s: exiting now", after_s)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(after_s, exit_now)
    timer.daemon = True
    timer.start()
