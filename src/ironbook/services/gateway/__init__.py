"""The public HTTP API gateway: stateless workers in front of the ledger.

auth.py         JWT verification, roles, the local signing secret
problems.py     RFC 9457 problem+json errors with stable codes
traffic.py      token buckets, admission control, IP allow/deny lists
idempotency.py  Idempotency-Key -> ledger request id, and the 409 rule
models.py       the HTTP request and response shapes (OpenAPI)
runtime.py      what one worker holds (settings, limiters, its ports)
edge.py         ASGI ahead of routing: shedding, body limit, the bets fast path
calls.py        auth, roles, ledger calls, idempotency, history, readiness
routes/         one router per resource: accounts, bets, cash-out, markets, odds stream, ops
app.py          the FastAPI application: routers, errors, the OpenAPI document
metrics.py      Prometheus metrics (summed over a machine's workers)
history.py      ledger-entry history: a log projector serving pages over NATS
odds.py         the live-odds WebSocket bridge from NATS
server.py       serving a worker: uvicorn on a SO_REUSEPORT socket

A worker is assembled by `ironbook.bootstrap` (settings in `ironbook.settings`).
"""
