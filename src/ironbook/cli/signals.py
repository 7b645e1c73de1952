"""SIGTERM handled as Ctrl-C by the commands that start processes of their
own (a cluster, a relay, a loop mount): `finally` blocks and context
managers unwind, so what the command started is stopped and removed
instead of left running."""

from __future__ import annotations

import signal


def unwind_on_sigterm() -> None:
    """From now on, SIGTERM raises KeyboardInterrupt in the main thread."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
