"""A long run that goes quiet says what it is waiting on.

A drill or soak prints a line at every step. When none comes for
`quiet_s`, `StallWatch` prints, every `quiet_s` after, each task of the
event loop with the chain of awaits it is suspended in (innermost last,
`file:line function`): a step stuck on a wait nobody bounded names itself
in the run's own output, where a test's timeout would only show the event
loop idle in `select`.

    stall = StallWatch(say, quiet_s=90)
    await stall.around(work(stall.say))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

QUIET_S = 90.0
"""No line for this long: the tasks' awaits are shown (and again as long as it lasts)."""
MAX_TASKS = 20
"""At most this many tasks are shown, the ones with the deepest chains first."""


@dataclass(slots=True)
class StallWatch:
    out: Callable[[str], None]
    quiet_s: float = QUIET_S
    last_line_at: float = field(default_factory=time.monotonic)

    def say(self, line: str) -> None:
        """`out(line)`, remembering when."""
        self.last_line_at = time.monotonic()
        self.out(line)

    async def around(self, work: Awaitable[T]) -> T:
        """`await work`, watched meanwhile; what it raises is raised as is."""
        try:
            async with asyncio.TaskGroup() as group:
                watcher = group.create_task(self.watch())
                try:
                    return await work
                finally:
                    watcher.cancel()
        except BaseExceptionGroup as group_error:  # the work's own error: the watcher only ends
            raise group_error.exceptions[0] from None

    async def watch(self) -> None:
        """Forever (cancel it): when the run has been quiet for `quiet_s`,
        show every other task's awaits."""
        me = asyncio.current_task()
        while True:
            quiet = time.monotonic() - self.last_line_at
            if quiet >= self.quiet_s:
                tasks = [task for task in asyncio.all_tasks() if task is not me]
                self.out(f"no step for {quiet:.0f} s; {len(tasks)} tasks wait on:")
                chains = sorted((awaits(task) for task in tasks), key=len, reverse=True)
                for chain in chains[:MAX_TASKS]:
                    self.out("  " + " > ".join(chain))
                self.last_line_at = time.monotonic()
            await asyncio.sleep(max(1.0, self.quiet_s - quiet))


def awaits(task: asyncio.Task[Any]) -> list[str]:
    """The frames `task` is suspended in, outermost first, as `file:line function`."""
    chain = []
    awaited: object = task.get_coro()
    while awaited is not None:
        frame = _frame(awaited)
        if frame is None:
            chain.append(type(awaited).__name__)  # a future or a C-level awaitable
            break
        code = frame.f_code
        chain.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain


def _frame(awaited: object) -> FrameType | None:
    """A coroutine's, generator's or async generator's frame (None when done, or none)."""
    for attribute in ("cr_frame", "gi_frame", "ag_frame"):
        frame: FrameType | None = getattr(awaited, attribute, None)
        if frame is not None:
            return frame
    return None
