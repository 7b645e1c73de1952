"""Every task has an owner: no bare `asyncio.create_task(` / `asyncio.gather(`
(or `loop.create_task(`) in `src/`; concurrent work runs in a TaskGroup
(`services.process.run_until_stopped` and `all_of` for services). The files
in OWNERS are the owning primitives themselves, each with its reason: it
starts tasks that it awaits in order and cancels and waits for (in a fixed
order, which the simulator's determinism needs and `TaskGroup`'s set order
does not give) before it returns or closes."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ironbook"

OWNERS = {
    "replication/concurrency.py",  # race(): a TaskGroup with a deterministic cancel order
    "replication/ledger_client.py",  # the runner task that close() cancels and awaits
    "replication/sequencer.py",  # appends in flight: acknowledged in order, cancelled on abort
    "replication/sim/run.py",  # replicas and clients of one seed: awaited, then cancelled in order
}

UNOWNED = re.compile(
    r"\basyncio\.(?:create_task|gather|ensure_future)\(|\b_?loop\.create_task\(|get_running_loop\(\)\.create_task\("
)


def _unowned_tasks() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        hits = [number for number, line in enumerate(lines, 1) if UNOWNED.search(line)]
        if hits:
            found[path.relative_to(SRC).as_posix()] = hits
    return found


def test_no_task_without_an_owner() -> None:
    found = _unowned_tasks()
    offenders = {name: lines for name, lines in found.items() if name not in OWNERS}
    assert offenders == {}, "use a TaskGroup (services.process.all_of / run_until_stopped)"


def test_every_owner_listed_still_starts_tasks() -> None:
    assert set(_unowned_tasks()) >= OWNERS, "drop a file that no longer starts tasks from OWNERS"


def test_the_scan_finds_what_it_looks_for() -> None:
    assert UNOWNED.search("    task = asyncio.create_task(work())")
    assert UNOWNED.search("await asyncio.gather(*jobs)")
    assert UNOWNED.search("asyncio.get_running_loop().create_task(x)")
    assert UNOWNED.search("self._loop.create_task(replica.run())")
    assert not UNOWNED.search("group.create_task(work())")


def test_no_asyncio_wait_for_in_src() -> None:
    """`asyncio.wait_for` loses a cancellation on Python 3.11 (see
    `replication.concurrency.wait_for`, which does not)."""
    found = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if "asyncio.wait_for(" in path.read_text()
    }
    assert found == set(), "use replication.concurrency.wait_for"
