"""The public HTTP API gateway: stateless workers in front of the ledger.

settings.py     one typed settings object (CLI flags, `IRONBOOK_*` env)
auth.py         JWT verification, roles, the local signing secret
problems.py     RFC 9457 problem+json errors with stable codes
traffic.py      token buckets, admission control, IP allow/deny lists
idempotency.py  Idempotency-Key -> ledger request id, and the 409 rule
models.py       the HTTP request and response shapes (OpenAPI)
app.py          the FastAPI application: routes, middleware, health, metrics
server.py       one worker process: uvicorn on a SO_REUSEPORT socket
"""
