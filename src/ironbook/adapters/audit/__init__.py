"""The audit trail's files: signing keys, archives, receipts, and reading the
partition logs to export them and to sign checkpoints over them."""
