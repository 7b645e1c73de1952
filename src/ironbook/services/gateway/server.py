"""One gateway worker process.

    python -m ironbook.services.gateway.server --nats URL --port PORT --data-dir DIR

Several workers share one port: each binds its own socket with SO_REUSEPORT
and the kernel spreads connections over them, so a worker that dies takes
only its own connections with it while the supervisor restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from ironbook.adapters import eventloop
from ironbook.services.gateway.app import create_app
from ironbook.services.gateway.settings import GatewaySettings

LISTEN_BACKLOG = 4096


def reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


async def serve(settings: GatewaySettings) -> None:
    sock = reuseport_socket(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,  # do not advertise the server software
        proxy_headers=False,  # the edge reads X-Forwarded-For itself, when trusted
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        limit_concurrency=None,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    with contextlib.closing(sock):
        await server.serve(sockets=[sock])


def parse_args(argv: list[str] | None = None) -> GatewaySettings:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", required=True, help="NATS URL(s), comma-separated")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--worker-id", default="w0")
    parser.add_argument("--nats-replicas", type=int, default=3)
    parser.add_argument(
        "--worker-count",
        type=int,
        default=1,
        help="workers sharing this port: each enforces 1/N of the configured rate limits "
        "(IRONBOOK_GATEWAY_WORKER_COUNT overrides)",
    )
    args = parser.parse_args(argv)
    if args.worker_count < 1:
        parser.error("--worker-count must be at least 1")
    return GatewaySettings(
        nats_url=args.nats,
        partitions=args.partitions,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        worker_id=args.worker_id,
        nats_replicas=args.nats_replicas,
        worker_count=args.worker_count,
    ).with_env()


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    _configure_logging()
    eventloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
