"""Bearer-key authentication for every /v1 route: unknown, revoked or expired keys get 401,
keys of an account whose billing is not active get 403."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from magistral.api.errors import APIError, error_response, storage_error
from magistral.platform.gateway import AccessDenied, Platform
from magistral.platform.keys import KeyInfo
from magistral.platform.store import StorageUnavailable

log = logging.getLogger("magistral.api")
COOKIE_ROUTES = "/console/api/"  # the console's API: session cookies and CSRF tokens, not keys

# stands in for a key when the platform layer is switched off (benchmarks only)
ANONYMOUS = KeyInfo(id=0, name="anonymous", prefix="", created_at=datetime(2026, 1, 1, tzinfo=UTC),
                    revoked_at=None)


async def require_key(request: Request) -> KeyInfo:
    platform: Platform = request.app.state.platform
    if not platform.enabled:
        return ANONYMOUS
    checked = getattr(request.state, "key", None)  # by AuthenticateBeforeBody
    if checked is not None:
        return checked
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise APIError(401, "Unauthorized: missing API key (send 'Authorization: Bearer <key>')")
    try:
        return await run_in_threadpool(platform.authenticate, secret.strip())
    except AccessDenied as denied:
        raise APIError(denied.status, denied.message, code=denied.code) from denied
    except (StorageUnavailable, SQLAlchemyError) as exc:  # the database is gone or down: not a 500
        if isinstance(exc, SQLAlchemyError):
            log.error("authentication could not read the database: %s", exc)
        raise storage_error() from exc


async def require_admin(request: Request) -> KeyInfo:
    key = await require_key(request)
    if request.app.state.platform.enabled and not key.is_admin:
        raise APIError(403, "Forbidden: this route needs an admin key (magistral keys create --admin)")
    return key


class AuthenticateBeforeBody:
    """Every POST (all of them carry a body and need a key) is authenticated from its headers
    before a byte of its body is read: a caller without a valid key cannot make the server read,
    buffer or parse anything. The key found is handed to `require_key` in the request state. The
    console's own API (/console/api/) signs people in with session cookies instead."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and not scope["path"].startswith(COOKIE_ROUTES)):
            try:
                key = await require_key(Request(scope))
            except APIError as err:
                return await error_response(err)(scope, receive, send)
            scope.setdefault("state", {})["key"] = key
        await self.app(scope, receive, send)
