"""The v1 API, one router per resource. A new resource is a new module here
with a `router`, listed in `ROUTERS`."""

from __future__ import annotations

from fastapi import APIRouter

from ironbook.services.gateway.routes import (
    accounts,
    admin,
    audit,
    bets,
    cash_out,
    markets,
    odds_stream,
    ops,
)

ROUTERS: tuple[APIRouter, ...] = (
    accounts.router,
    admin.router,
    audit.router,
    bets.router,
    cash_out.router,
    markets.router,
    odds_stream.router,
    ops.router,
)
