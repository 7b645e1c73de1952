"""Encrypted, verified backups of the ledger (snapshots and log segments) to a
directory or an rclone remote, and restores from them (docs/backup.md)."""
