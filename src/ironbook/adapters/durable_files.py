"""A rename made durable: after a file is fsynced and renamed into place,
its directory is fsynced too, or a crash can lose the rename (and the file
with it) even though the file's bytes were on disk."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` (a rename into it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
