"""A deterministic virtual-time asyncio event loop.

Time advances only when every task is waiting: the fake selector's `select`
jumps the clock to the next timer instead of blocking. Virtual seconds cost
nothing, and with seeded randomness and no I/O one seed replays exactly.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

from ironbook.replication.concurrency import cancel_and_wait

T = TypeVar("T")

_NS_PER_S = 1_000_000_000


class SimDeadlock(RuntimeError):
    """Every task is waiting and no timer is pending: nothing can ever happen."""


class SimTimeLimit(RuntimeError):
    """The run went past its virtual-time limit."""


class _VirtualSelector(selectors.BaseSelector):
    """Holds registrations (the loop registers its self-pipe) but never
    reports readiness: the simulation does no I/O."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        self._advance = advance
        self._keys: dict[FileDescriptorLike, selectors.SelectorKey] = {}

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimDeadlock("every task is waiting and no timer is pending")
        if timeout > 0:
            self._advance(timeout)
        return []

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return MappingProxyType(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, *, max_virtual_ms: int) -> None:
        self._now_ns = 0
        self._limit_ns = max_virtual_ms * 1_000_000
        super().__init__(selector=_VirtualSelector(self._advance))

    def time(self) -> float:
        return self._now_ns / _NS_PER_S

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def now_ms(self) -> int:
        return self._now_ns // 1_000_000

    def lift_time_limit(self) -> None:
        """For teardown after a run hit its limit."""
        self._limit_ns = math.inf  # type: ignore[assignment]

    def _advance(self, seconds: float) -> None:
        self._now_ns += max(1, math.ceil(seconds * _NS_PER_S))
        if self._now_ns > self._limit_ns:
            raise SimTimeLimit(f"virtual time passed {self._limit_ns // 1_000_000} ms")


def run_virtual(
    main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]], *, max_virtual_ms: int
) -> T:
    """Run `main(loop)` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop(max_virtual_ms=max_virtual_ms)
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.lift_time_limit()
        try:
            leftovers = list(asyncio.all_tasks(loop))
            if leftovers:
                loop.run_until_complete(cancel_and_wait(leftovers))
        finally:
            loop.close()
