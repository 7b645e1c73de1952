"""Where backups go: a directory (an off-site mount) or an rclone remote.

    /mnt/offsite/ironbook            a directory (made if missing)
    rclone:<remote>:<path>           `rclone` (Debian's package) with a configured remote

A target stores whole files by a relative path. A file written to it appears
whole or not at all: a directory target writes beside it, fsyncs and renames;
an rclone target uploads to `<name>.partial` and moves it into place
(`rclone moveto`, a server-side rename or copy). Every call is bounded by
`RCLONE_TIMEOUT_S`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Protocol

from ironbook.adapters.durable_files import fsync_directory

RCLONE_PREFIX = "rclone:"
RCLONE_TIMEOUT_S = 600.0
_RCLONE_NOT_FOUND = (3, 4)
"""rclone's exit statuses for a directory and a file not found."""


class TargetError(Exception):
    """The target cannot be reached, or refused an operation."""


class MissingFile(TargetError):
    """No file at that path on the target."""


class Target(Protocol):
    @property
    def name(self) -> str:
        """How the operator wrote it (for messages)."""
        ...

    def put(self, path: str, data: bytes) -> None: ...

    def get(self, path: str) -> bytes:
        """Raises `MissingFile` when there is none."""
        ...

    def delete_tree(self, path: str) -> None:
        """Remove a directory and everything under it (nothing if absent)."""
        ...


def _checked(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise TargetError(f"{path!r} is not a path inside the target")
    return relative


class DirectoryTarget:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def put(self, path: str, data: bytes) -> None:
        final = self.root / _checked(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{os.getpid()}.partial")
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(final)
            fsync_directory(final.parent)
        except OSError as err:
            temp.unlink(missing_ok=True)
            raise TargetError(f"{self.name}: write {path}: {err}") from err

    def get(self, path: str) -> bytes:
        try:
            return (self.root / _checked(path)).read_bytes()
        except FileNotFoundError as err:
            raise MissingFile(f"{self.name}: no {path}") from err
        except OSError as err:
            raise TargetError(f"{self.name}: read {path}: {err}") from err

    def delete_tree(self, path: str) -> None:
        try:
            shutil.rmtree(self.root / _checked(path))
        except FileNotFoundError:
            return
        except OSError as err:
            raise TargetError(f"{self.name}: delete {path}: {err}") from err


class RcloneTarget:
    """`remote` is what rclone takes: `<remote>:<path>`."""

    def __init__(self, remote: str) -> None:
        binary = shutil.which("rclone")
        if binary is None:
            raise TargetError(
                "rclone is not installed: `make backup-tools` (as root) installs Debian's rclone"
            )
        self._binary = binary
        self._remote = remote.rstrip("/")
        self.name = f"{RCLONE_PREFIX}{remote}"

    def _url(self, path: str) -> str:
        return f"{self._remote}/{_checked(path)}"

    def _run(self, *args: str, stdin: bytes | None = None) -> bytes:
        try:
            done = subprocess.run(
                [self._binary, *args],
                input=stdin,
                capture_output=True,
                timeout=RCLONE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise TargetError(f"rclone {args[0]}: no answer in {RCLONE_TIMEOUT_S:.0f} s") from err
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            detail = message[-1] if message else f"exit status {done.returncode}"
            if done.returncode in _RCLONE_NOT_FOUND:
                raise MissingFile(f"{self.name}: {args[1]}: {detail}")
            raise TargetError(f"rclone {args[0]} {args[1]}: {detail}")
        return done.stdout

    def put(self, path: str, data: bytes) -> None:
        final = self._url(path)
        partial = f"{final}.partial"
        self._run("rcat", partial, stdin=data)
        self._run("moveto", partial, final)

    def get(self, path: str) -> bytes:
        url = self._url(path)
        # `rclone cat` prints nothing for a missing file: ask first.
        self._run("lsf", url)
        return self._run("cat", url)

    def delete_tree(self, path: str) -> None:
        try:
            self._run("purge", self._url(path))
        except MissingFile:
            return


def open_target(spec: str) -> Target:
    """A target from how the operator wrote it (see the module doc)."""
    if spec.startswith(RCLONE_PREFIX):
        remote = spec[len(RCLONE_PREFIX) :]
        if ":" not in remote:
            raise TargetError(f"{spec!r}: write rclone:<remote>:<path>")
        return RcloneTarget(remote)
    if not spec:
        raise TargetError("no backup target given")
    return DirectoryTarget(Path(spec).expanduser().resolve())
