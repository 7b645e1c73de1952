"""A replica's state hash is taken in a forked child: the hash is of the
state as it was when asked, whatever the replica does meanwhile, and a child
that fails gives no hash instead of an exception."""

from __future__ import annotations

import asyncio
import os
import time

from ironbook.services.replica import StateHashes


class _Replica:
    """What `StateHashes` reads of a replica: its `state_hash()`."""

    def __init__(self, state: str, *, fail: bool = False) -> None:
        self.state = state
        self.fail = fail

    def state_hash(self) -> str | None:
        time.sleep(0.2)  # in the child: the parent's loop goes on meanwhile
        if self.fail:
            raise RuntimeError("encoding failed")
        return f"{self.state}@{os.getpid()}"


def test_the_hash_is_of_the_state_when_asked_and_is_taken_in_a_child() -> None:
    async def scenario() -> tuple[str | None, int]:
        replica = _Replica("before")
        hashes = StateHashes(replica)  # type: ignore[arg-type]
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with asyncio.TaskGroup() as tasks:
            ticking = tasks.create_task(tick())
            asked = tasks.create_task(hashes.now())
            await asyncio.sleep(0)  # the child forks
            replica.state = "after"
            state_hash = await asked
            ticking.cancel()
        return state_hash, ticks

    state_hash, ticks = asyncio.run(scenario())
    assert state_hash is not None
    state, pid = state_hash.split("@")
    assert state == "before"
    assert int(pid) != os.getpid()
    assert ticks > 0, "the event loop went on while the child hashed"


def test_a_failed_child_gives_no_hash() -> None:
    hashes = StateHashes(_Replica("x", fail=True))  # type: ignore[arg-type]
    assert asyncio.run(hashes.now()) is None
