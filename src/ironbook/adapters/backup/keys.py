"""age keys for backups (X25519, through `pyrage`).

Backups are encrypted to recipients (public keys, `age1...`), so the process
that writes them holds no secret that can read them. The identity (the
private key, `AGE-SECRET-KEY-1...`) that `ironbook backup keygen` makes lives
in `<data-dir>/secrets/backup/identity.txt` (0600); keep a copy off the site,
away from the backups: a restore needs it, and it is the one thing the
backups cannot hold.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

import pyrage

from ironbook.adapters.secret_files import write_new_secret

IDENTITY_FILE = Path("secrets") / "backup" / "identity.txt"


class BackupKeyError(ValueError):
    """A recipient or identity that is missing, malformed or exposed."""


def identity_path(data_dir: Path) -> Path:
    return data_dir / IDENTITY_FILE


def generate_identity(path: Path) -> str:
    """Make a new identity at `path` (refused if one is there); returns its
    recipient (the public key to put in `backup.recipients`)."""
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = f"# created by ironbook backup keygen\n# public key: {recipient}\n{identity}\n"
    if not write_new_secret(path, text.encode()):
        raise BackupKeyError(f"{path} exists: one identity per data directory, never overwritten")
    return recipient


def parse_recipients(texts: Sequence[str]) -> list[pyrage.x25519.Recipient]:
    if not texts:
        raise BackupKeyError(
            "no backup recipients: set backup.recipients (or --recipient) to the public key "
            "`ironbook backup keygen` printed"
        )
    recipients = []
    for text in texts:
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except pyrage.RecipientError as err:
            raise BackupKeyError(f"{text!r} is not an age X25519 recipient (age1...)") from err
    return recipients


def load_identity(path: Path) -> pyrage.x25519.Identity:
    """The identity in `path`: the first line that is not a comment. Refused
    when the file can be read by anyone but its owner."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise BackupKeyError(f"backup identity {path}: {err.strerror}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackupKeyError(
            f"backup identity {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
            "chmod 600 it"
        )
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise BackupKeyError(f"backup identity {path} holds no key")
    try:
        return pyrage.x25519.Identity.from_str(keys[0])
    except pyrage.IdentityError as err:
        raise BackupKeyError(f"backup identity {path} is not an age X25519 identity") from err
