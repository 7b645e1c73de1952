"""The public HTTP API gateway: stateless workers in front of the ledger.

settings.py     one typed settings object (CLI flags, `IRONBOOK_GATEWAY_*` env)
auth.py         JWT verification, roles, the local signing secret
problems.py     RFC 9457 problem+json errors with stable codes
traffic.py      token buckets, admission control, IP allow/deny lists
idempotency.py  Idempotency-Key -> ledger request id, and the 409 rule
models.py       the HTTP request and response shapes (OpenAPI)
runtime.py      what one worker holds (settings, limiters, connections)
edge.py         ASGI ahead of routing: shedding, body limit, the bets fast path
calls.py        auth, roles, ledger calls, idempotency, history, readiness
app.py          the FastAPI application: routes, views, errors
metrics.py      Prometheus metrics (summed over a machine's workers)
history.py      ledger-entry history: a log projector serving pages over NATS
odds.py         the live-odds WebSocket bridge from NATS
server.py       one worker process: uvicorn on a SO_REUSEPORT socket
"""
