"""Secret files: written once, owner-only (0600, directories 0700), atomically."""

from __future__ import annotations

import os
from pathlib import Path


def write_new_secret(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless it exists. The file appears whole or not at
    all (written beside it, then linked into place), so two writers racing end
    up with one of their secrets, never a mix. Returns False if it existed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return False
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fsync(handle.fileno())
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    return True
