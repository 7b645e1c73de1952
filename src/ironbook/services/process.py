"""How an ironbook service process runs (replica, gateway worker, history
projector, feed provider, ingester, settlement service): its `serve(stop)` on
ironbook's event loop, SIGTERM/SIGINT turned into `stop` so that it ends
gracefully, its concurrent work owned by one TaskGroup, and, when its
supervisor names a liveness file (`LIVENESS_ENV`), that file touched every
`LIVENESS_INTERVAL_MS` from the event loop: a hung or frozen process stops
touching it, and the supervisor restarts it (`services.supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ironbook.adapters import eventloop

T = TypeVar("T")

log = logging.getLogger("ironbook.process")

LIVENESS_ENV = "IRONBOOK_LIVENESS_FILE"
LIVENESS_INTERVAL_MS = 1_000


def process_command(kind: str, config_args: list[str]) -> list[str]:
    """The command line that starts one ironbook process of `kind` through
    the composition root (`python -m ironbook.bootstrap KIND`)."""
    return [sys.executable, "-m", "ironbook.bootstrap", kind, *config_args]


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
                _exit_if_stuck(exit_if_stuck_after_s, loop)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        liveness = os.environ.get(LIVENESS_ENV)
        if not liveness:
            return await serve(stop)
        async with asyncio.TaskGroup() as group:
            beating = group.create_task(_touch_every_interval(Path(liveness)))
            try:
                return await serve(stop)
            finally:
                beating.cancel()

    return eventloop.run(main())


async def _touch_every_interval(path: Path) -> None:
    """Touch `path` now and every `LIVENESS_INTERVAL_MS` until cancelled."""
    while True:
        _touch(path)
        await asyncio.sleep(LIVENESS_INTERVAL_MS / 1000)


def _touch(path: Path) -> None:
    """On the event loop on purpose (a few microseconds): a touch vouches
    that the loop turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _exit_if_stuck(after_s: float, loop: asyncio.AbstractEventLoop) -> None:
    """End the process `after_s` from now (a daemon thread, so a wedged event
    loop cannot hold it up): an operator's SIGTERM must stop the process.
    The tasks still running are logged first, with where each one waits."""

    def exit_now() -> None:
        log.warning(
            "still stopping after %.0f s: exiting now; tasks still running:\n%s",
            after_s,
            _tasks_still_running(loop),
        )
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(after_s, exit_now)
    timer.daemon = True
    timer.start()


def _tasks_still_running(loop: asyncio.AbstractEventLoop) -> str:
    """Each unfinished task of `loop` and where it waits (a suspended
    coroutine shows its own frame only). Read from another thread while the
    loop may still run: best effort."""
    lines: list[str] = []
    try:
        for task in list(asyncio.all_tasks(loop)):
            frames = task.get_stack(limit=None)
            where = " <- ".join(
                f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
                for frame in reversed(frames[-4:])
            )
            lines.append(f"  {task.get_name()}: {where or '(not started)'}")
    except RuntimeError as error:  # the loop changed the task set meanwhile
        lines.append(f"  (could not list them: {error})")
    return "\n".join(lines)


async def run_until_stopped(stop: asyncio.Event, *work: Coroutine[Any, Any, Any]) -> None:
    """Run `work` concurrently in one TaskGroup until `stop` is set or any of
    it ends, then cancel the rest and wait for it. An error in any piece
    cancels the others and is raised (in an ExceptionGroup)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(item) for item in work]
        stopping = group.create_task(stop.wait())
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, *tasks):
            task.cancel()


async def all_of(*work: Coroutine[Any, Any, T]) -> list[T]:
    """`work` run concurrently in one TaskGroup; the results in order. If one
    fails, the others are cancelled and its error is raised as it is (the
    first one, should several fail), as `asyncio.gather` would."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(item) for item in work]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
