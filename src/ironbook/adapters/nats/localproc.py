"""Local child processes and loopback ports for engines run on one machine.

Used by the NATS and PostgreSQL launchers (tests, `ironbook up`, benchmarks).
Every process is started in its own session and is only ever signalled by its
own PID: nothing here matches processes by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ironbook.adapters.procfs import process_stat

LOOPBACK = "127.0.0.1"

# Below Linux's ephemeral range (32768-60999 by default), so a port we hand to
# a server is never also picked by the kernel for some outgoing connection.
_PORT_LOW = 20000
_PORT_HIGH = 32000
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "ironbook-ports"
_MAX_PORT_TRIES = 500


class PortError(RuntimeError):
    """No free loopback port could be reserved."""


class PortLease:
    """Loopback ports reserved for this process until `release()`.

    A port is reserved by an exclusive `flock` on a per-port lock file, so
    parallel test workers (pytest-xdist) and benchmarks never pick the same
    port; the lock dies with the process that holds it.
    """

    def __init__(self) -> None:
        self._locks: dict[int, IO[bytes]] = {}

    @property
    def ports(self) -> list[int]:
        return list(self._locks)

    def take(self, count: int) -> list[int]:
        return [self._take_one() for _ in range(count)]

    def hold(self, port: int) -> None:
        """Reserve a known port (a restarted cluster reuses its old ports)."""
        if not self._try_lock(port):
            raise PortError(f"port {port} is reserved by another ironbook process")

    def _take_one(self) -> int:
        for _ in range(_MAX_PORT_TRIES):
            port = random.randrange(_PORT_LOW, _PORT_HIGH)
            if port in self._locks:
                continue
            if self._try_lock(port) and _bindable(port):
                return port
            self._unlock(port)
        raise PortError(f"no free loopback port after {_MAX_PORT_TRIES} tries")

    def _try_lock(self, port: int) -> bool:
        PORT_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
        handle = (PORT_LOCK_DIR / f"{port}.lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._locks[port] = handle
        return True

    def _unlock(self, port: int) -> None:
        handle = self._locks.pop(port, None)
        if handle is not None:
            handle.close()

    def release(self) -> None:
        for port in list(self._locks):
            self._unlock(port)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def as_user(user: str | None) -> dict[str, Any]:
    """`subprocess` arguments that run a child as `user` (uid, gid and no
    supplementary groups), or nothing for the current user."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


class ManagedProcess:
    """One child process, addressed by PID only.

    `kill()` is SIGKILL, `pause()`/`resume()` are SIGSTOP/SIGCONT, `stop()` is
    `stop_signal` (SIGTERM unless told; PostgreSQL's fast shutdown is SIGINT)
    then, after `timeout_ms`, SIGKILL.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.log_path = log_path
        self._cwd = cwd
        self._env = env
        self._user = user
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def env(self) -> dict[str, str]:
        """The environment the next start gives the process."""
        return dict(self._env if self._env is not None else os.environ)

    def set_env(self, name: str, value: str) -> None:
        """One environment variable for the next start (the rest inherited
        or as given)."""
        self._env = {**(self._env if self._env is not None else os.environ), name: value}

    def start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                **as_user(self._user),
            )

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def send(self, sig: signal.Signals) -> None:
        if self._popen is None or self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._popen.pid, sig)

    def kill(self) -> None:
        """kill -9, then reap, so the PID is never left as a zombie."""
        self.send(signal.SIGKILL)
        self.wait(timeout_ms=10_000)

    def pause(self, timeout_ms: int = 5000) -> None:
        """SIGSTOP, and wait until the kernel reports the process stopped
        (signal delivery is asynchronous)."""
        self.send(signal.SIGSTOP)
        wait_until(
            f"{self.name} stopped",
            lambda: self._state() in ("T", None),
            timeout_ms=timeout_ms,
            interval_ms=5,
        )

    def resume(self, timeout_ms: int = 5000) -> None:
        self.send(signal.SIGCONT)
        wait_until(
            f"{self.name} resumed",
            lambda: self._state() != "T",
            timeout_ms=timeout_ms,
            interval_ms=5,
        )

    def _state(self) -> str | None:
        """The process state letter from /proc (R, S, T, Z...), None if gone."""
        stat = None if self._popen is None else process_stat(self._popen.pid)
        return None if stat is None else stat.state

    def terminate(self) -> None:
        """The stop signal, after SIGCONT in case it is paused; does not wait."""
        self.send(signal.SIGCONT)
        self.send(self.stop_signal)

    def stop(self, timeout_ms: int = 10_000) -> None:
        """Graceful stop, then SIGKILL if still alive after `timeout_ms`."""
        if not self.is_running():
            return
        self.terminate()
        if not self.wait(timeout_ms=timeout_ms):
            self.kill()

    def wait(self, timeout_ms: int) -> bool:
        if self._popen is None:
            return True
        try:
            self._popen.wait(timeout=timeout_ms / 1000)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")


def wait_until(
    what: str, check: Callable[[], bool], *, timeout_ms: int, interval_ms: int = 50
) -> None:
    """Poll `check()` until it returns true, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_ms} ms waiting for {what}")
        time.sleep(interval_ms / 1000)
