"""A command that starts processes of its own unwinds on SIGTERM as on
Ctrl-C: its `finally` blocks run, so what it started is stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

WAIT_S = 30.0

SCRIPT = """
import sys, time
from pathlib import Path
from ironbook.cli.signals import unwind_on_sigterm
unwind_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    Path(sys.argv[1]).write_text("cleaned up")
"""


def test_sigterm_runs_the_commands_finally_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=WAIT_S)
    finally:
        child.kill()
        child.wait()
    assert marker.read_text() == "cleaned up"
