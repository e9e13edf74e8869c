"""`Idempotency-Key`: a POST retried with the same header value (by the same API key) gets the
first run's answer again instead of a second, billed run.

The first request with a value claims it (a row in the database, unique per API key and value,
so replicas sharing a database agree); its complete answer, streamed or not, is stored when it
ends. A retry then gets that answer with `Idempotent-Replayed: true`; a retry while the first
is still running gets 409; the same value with a different body gets 422. Answers that a retry
should redo are not kept: 402 (a budget since raised), 429, 5xx, a client gone before the end,
and answers over MAX_STORED_BYTES. Values are kept for a day.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magistral.api.errors import APIError, error_response
from magistral.platform.store import IdempotentResponse, Store, utcnow

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
MAX_STORED_BYTES = 8 * 1024 * 1024
KEPT_FOR = timedelta(days=1)


class Idempotency:
    """ASGI middleware, inside authentication (it needs the caller's key) and the body limit."""

    def __init__(self, app: ASGIApp, store: Store):
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = dict(scope.get("headers", [])).get(HEADER) if scope["type"] == "http" else None
        key = scope.get("state", {}).get("key")
        if value is None or scope["method"] != "POST" or key is None:
            return await self.app(scope, receive, send)
        token = value.decode("latin-1")
        if not 0 < len(token) <= MAX_KEY_LENGTH:
            return await error_response(APIError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} "
                                                 "characters", param="Idempotency-Key"))(scope, receive, send)
        body, more = bytearray(), True
        while more:  # bounded by the body limit outside this middleware
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        fingerprint = hashlib.sha256(scope["method"].encode() + b" " + scope["path"].encode() + b"\n"
                                     + bytes(body)).hexdigest()
        stored = await run_in_threadpool(self._claim, key.id, token, fingerprint)
        if stored is not None:
            return await self._answer(stored, fingerprint, scope, receive, send)

        replayed = False

        async def replay_body() -> Message:
            """The body read above, then the client's own messages (its disconnect)."""
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        status, headers, answer, complete = 0, [], bytearray(), False

        async def capture(message: Message) -> None:
            nonlocal status, headers, complete
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                if len(answer) <= MAX_STORED_BYTES:
                    answer.extend(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            keep = complete and status < 500 and status not in (402, 429, 499) \
                and len(answer) <= MAX_STORED_BYTES
            await run_in_threadpool(self._settle, key.id, token, keep, status, headers, bytes(answer))

    def _claim(self, key_id: int, token: str, fingerprint: str) -> IdempotentResponse | None:
        """None: this request is the first and now owns the value; else the row already there."""
        with self.store.session() as s:
            with s.begin():
                s.execute(delete(IdempotentResponse).where(
                    IdempotentResponse.key_id == key_id, IdempotentResponse.created_at < utcnow() - KEPT_FOR))
            try:
                with s.begin():
                    s.add(IdempotentResponse(key_id=key_id, idempotency_key=token, fingerprint=fingerprint))
                return None
            except IntegrityError:
                pass
            return s.scalar(select(IdempotentResponse).where(IdempotentResponse.key_id == key_id,
                                                             IdempotentResponse.idempotency_key == token))

    def _settle(self, key_id: int, token: str, keep: bool, status: int,
                headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        with self.store.session() as s, s.begin():
            row = s.scalar(select(IdempotentResponse).where(IdempotentResponse.key_id == key_id,
                                                            IdempotentResponse.idempotency_key == token))
            if row is None:
                return
            if not keep:  # a retry should run again
                s.delete(row)
                return
            row.done, row.status, row.body = True, status, body
            row.headers = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers])

    async def _answer(self, stored: IdempotentResponse, fingerprint: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        if stored.fingerprint != fingerprint:
            err = APIError(422, "This Idempotency-Key was used with a different request; use a new key for "
                           "a new request", param="Idempotency-Key")
            return await error_response(err)(scope, receive, send)
        if not stored.done:
            err = APIError(409, "A request with this Idempotency-Key is still running; retry when it ends",
                           param="Idempotency-Key")
            return await error_response(err)(scope, receive, send)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(stored.headers)]
        headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})
