"""The ledger client over NATS: how every process talks to the ledger.

    client = await connect_ledger(NatsEndpoint(url, credentials), partitions=1)
    outcome = await client.submit(core.PlaceBet(...))
    await client.close()

`LedgerClient` (routing, batching, retries with the same request id,
backoff and deadlines) lives in `ironbook.replication`, where the simulator
drives the very same client over its simulated network; this module puts it
on a NATS connection.
"""

from __future__ import annotations

import random

from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.clock import MonotonicClock
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.adapters.nats.transport import NatsCommandTransport
from ironbook.core import Issuer
from ironbook.replication.client import BadRequest, BatchConfig, ClientConfig, GaveUp
from ironbook.replication.ledger_client import ClientStopped, LedgerClient

__all__ = [
    "BadRequest",
    "BatchConfig",
    "ClientConfig",
    "ClientStopped",
    "GaveUp",
    "LedgerClient",
    "NotAccepted",
    "connect_ledger",
    "ledger_over_nats",
    "open_funded_account",
]


def ledger_over_nats(
    nc: NatsClient,
    *,
    partitions: int,
    config: ClientConfig | None = None,
    batching: BatchConfig | None = None,
    owns_connection: bool = False,
    issuer: Issuer | None = None,
) -> LedgerClient:
    """A client on an open NATS connection (closed with the client only if
    `owns_connection`), whose commands are from `issuer` unless they name
    their principal themselves."""
    return LedgerClient(
        NatsCommandTransport(nc, owns_connection=owns_connection),
        partitions=partitions,
        clock=MonotonicClock(),
        rng=random.Random(),
        config=config,
        batching=batching,
        issuer=issuer,
    )


async def connect_ledger(
    endpoint: NatsEndpoint,
    *,
    partitions: int = 1,
    config: ClientConfig | None = None,
    batching: BatchConfig | None = None,
    issuer: Issuer | None = None,
) -> LedgerClient:
    """A client on its own NATS connection, drained by `close`."""
    nc = await endpoint.connect("ironbook-client")
    return ledger_over_nats(
        nc,
        partitions=partitions,
        config=config,
        batching=batching,
        owns_connection=True,
        issuer=issuer,
    )


class NotAccepted(Exception):
    """The ledger answered a command with something other than `Accepted`."""


async def open_funded_account(
    client: LedgerClient, account_id: str, amount_minor: int, reason: str
) -> None:
    """Open `account_id` and deposit `amount_minor` into it (request ids
    `open-<id>` and `deposit-<id>`); `NotAccepted` naming the outcome if
    the ledger does not accept either."""
    for command in (
        core.OpenAccount(request_id=f"open-{account_id}", account_id=account_id),
        core.Deposit(
            request_id=f"deposit-{account_id}",
            account_id=account_id,
            amount_minor=amount_minor,
            reason=reason,
        ),
    ):
        outcome = await client.submit(command)
        if not isinstance(outcome, core.Accepted):
            raise NotAccepted(f"{command.request_id}: {outcome!r}")
