"""A local PostgreSQL primary with a synchronous standby, for the baseline.

What a team would deploy instead of ironbook: a primary that commits only when
the standby has the WAL on disk (`synchronous_commit = on` with
`synchronous_standby_names`). Both servers run from temp directories on
loopback ports. PostgreSQL refuses to run as root, so when we are root the
directories are chown'ed to the `postgres` user and every server binary runs
as that user; the postmaster is our direct child, so its PID is the one we
signal.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from ironbook.adapters.nats.localproc import (
    LOOPBACK,
    ManagedProcess,
    PortLease,
    as_user,
    wait_until,
)

STANDBY_NAME = "standby1"
SUPERUSER = "postgres"
_SERVICE_USER = "postgres"
_PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]
_COMMAND_TIMEOUT_S = 120


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (Debian: `apt-get install postgresql-15`)."""


def postgres_bin_dir() -> Path:
    configured = os.environ.get("IRONBOOK_PG_BIN")
    candidates = [Path(configured)] if configured else _PG_BIN_CANDIDATES
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    raise PostgresNotFound(
        "PostgreSQL 15 server binaries not found in /usr/lib/postgresql/15/bin "
        "(Debian package postgresql-15) and IRONBOOK_PG_BIN is not set"
    )


def _run_as() -> str | None:
    return _SERVICE_USER if os.geteuid() == 0 else None


def _chown_to_service_user(path: Path) -> None:
    user = _run_as()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


class LocalPostgresPair:
    """A primary and a synchronous standby streaming from it.

    `base_dir` must be traversable by the `postgres` user; by default a fresh
    directory under the system temp dir is made and removed on `close()`.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        synchronous: bool = True,
        shared_buffers_mb: int = 256,
        max_connections: int = 200,
    ) -> None:
        self._owns_base_dir = base_dir is None
        self.base_dir = (base_dir or Path(tempfile.mkdtemp(prefix="ironbook-pg-"))).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self.bin_dir = postgres_bin_dir()
        self.synchronous = synchronous
        self._shared_buffers_mb = shared_buffers_mb
        self._max_connections = max_connections
        self._ports = PortLease()
        self.primary_port, self.standby_port = self._ports.take(2)
        self.primary_dir = self.base_dir / "primary"
        self.standby_dir = self.base_dir / "standby"
        self.primary = self._server("primary", self.primary_dir)
        self.standby = self._server("standby", self.standby_dir)

    def _server(self, name: str, data_dir: Path) -> ManagedProcess:
        return ManagedProcess(
            f"postgres-{name}",
            [str(self.bin_dir / "postgres"), "-D", str(data_dir)],
            log_path=self.base_dir / f"{name}.log",
            user=_run_as(),
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, checkpoint, exit
        )

    def dsn(self, *, database: str = "postgres", standby: bool = False) -> str:
        port = self.standby_port if standby else self.primary_port
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{port}/{database}"

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout_ms: int = 120_000) -> None:
        _chown_to_service_user(self.base_dir)
        self._tool(
            "initdb",
            "-D",
            str(self.primary_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        self._configure_primary()
        self.primary.start()
        self._wait_ready(self.primary_port, self.primary, timeout_ms)
        self._tool(
            "pg_basebackup",
            "-h",
            LOOPBACK,
            "-p",
            str(self.primary_port),
            "-U",
            SUPERUSER,
            "-D",
            str(self.standby_dir),
            "--wal-method=stream",
            "--write-recovery-conf",
            "--no-sync",
        )
        self._configure_standby()
        self.standby.start()
        self._wait_ready(self.standby_port, self.standby, timeout_ms)
        wait_until(
            "the standby to stream synchronously",
            self._standby_in_sync,
            timeout_ms=timeout_ms,
            interval_ms=100,
        )

    def stop(self, timeout_ms: int = 30_000) -> None:
        self.standby.stop(timeout_ms=timeout_ms)
        self.primary.stop(timeout_ms=timeout_ms)

    def close(self) -> None:
        self.stop()
        self._ports.release()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration ---------------------------------------------------

    def _configure_primary(self) -> None:
        standby_names = f"'FIRST 1 ({STANDBY_NAME})'" if self.synchronous else "''"
        self._append_conf(
            self.primary_dir / "postgresql.conf",
            {
                "listen_addresses": f"'{LOOPBACK}'",
                "port": str(self.primary_port),
                "unix_socket_directories": f"'{self.base_dir}'",
                "max_connections": str(self._max_connections),
                "shared_buffers": f"'{self._shared_buffers_mb}MB'",
                "wal_level": "replica",
                "max_wal_senders": "5",
                "fsync": "on",
                "synchronous_commit": "on",
                "synchronous_standby_names": standby_names,
                "wal_retrieve_retry_interval": "'100ms'",
                "hot_standby": "on",
            },
        )
        hba = self.primary_dir / "pg_hba.conf"
        with hba.open("a") as out:
            out.write(f"host all all {LOOPBACK}/32 trust\n")
            out.write(f"host replication all {LOOPBACK}/32 trust\n")

    def _configure_standby(self) -> None:
        # pg_basebackup copied the primary's config: only what differs. Into
        # postgresql.auto.conf, which is read last: --write-recovery-conf put
        # a primary_conninfo without application_name there.
        conninfo = (
            f"host={LOOPBACK} port={self.primary_port} user={SUPERUSER} "
            f"application_name={STANDBY_NAME}"
        )
        self._append_conf(
            self.standby_dir / "postgresql.auto.conf",
            {"port": str(self.standby_port), "primary_conninfo": f"'{conninfo}'"},
        )
        _chown_to_service_user(self.standby_dir)

    @staticmethod
    def _append_conf(path: Path, settings: dict[str, str]) -> None:
        with path.open("a") as out:
            out.write("\n# ironbook local cluster\n")
            for key, value in settings.items():
                out.write(f"{key} = {value}\n")

    # -- helpers ---------------------------------------------------------

    def _tool(self, name: str, *args: str) -> None:
        argv = [str(self.bin_dir / name), *args]
        result = subprocess.run(
            argv,
            cwd=self.base_dir,
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
            **as_user(_run_as()),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{name} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )

    def psql(self, sql: str, *, standby: bool = False) -> str:
        port = self.standby_port if standby else self.primary_port
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                LOOPBACK,
                "-p",
                str(port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode().strip()

    def _wait_ready(self, port: int, process: ManagedProcess, timeout_ms: int) -> None:
        def ready() -> bool:
            if not process.is_running():
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            result = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    *("-h", LOOPBACK, "-p", str(port), "-U", SUPERUSER, "-q"),
                ],
                capture_output=True,
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )
            return result.returncode == 0

        wait_until(f"{process.name} ready", ready, timeout_ms=timeout_ms, interval_ms=100)

    def _standby_in_sync(self) -> bool:
        wanted = "sync" if self.synchronous else "async"
        state = self.psql(
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming'"
        )
        return state == wanted
