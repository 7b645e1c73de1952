"""`NatsEndpoint.connect(within_s=...)` ends when no server answers,
where nats-py's own first connect would retry forever."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ironbook.adapters.nats.provision import NatsEndpoint


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_connect_to_no_server_gives_up_within_its_time() -> None:
    endpoint = NatsEndpoint(f"nats://127.0.0.1:{_closed_port()}")

    async def attempts() -> None:
        for _ in range(20):  # many attempts: a lost cancellation would hang one
            with pytest.raises(TimeoutError, match=r"answered within 0\.3 s"):
                await endpoint.connect("test", within_s=0.3)

    asyncio.run(attempts())
