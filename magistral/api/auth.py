"""Bearer-key authentication for every /v1 route."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.platform.keys import KeyInfo, verify_key


async def require_key(request: Request) -> KeyInfo:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise APIError(401, "Unauthorized: missing API key (send 'Authorization: Bearer <key>')")
    key = await run_in_threadpool(verify_key, request.app.state.store, secret.strip())
    if key is None:
        raise APIError(401, "Unauthorized: invalid or revoked API key")
    return key
