"""The FastAPI application: routes, error shapes, shared state (models, store)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magistral import __version__
from magistral.api.auth import AuthenticateBeforeBody, require_admin
from magistral.api.errors import APIError, error_response, install_error_handlers
from magistral.api.idempotency import Idempotency
from magistral.api.routes import chat, completions, embeddings, fim, models, tokenize, usage
from magistral.chat.images import ImagePolicy
from magistral.console.settings import ConsoleSettings
from magistral.engine.registry import ModelRegistry
from magistral.platform.gateway import Platform
from magistral.platform.ratelimit import LimiterUnavailable
from magistral.platform.store import StorageUnavailable

RATE_LIMIT_HEADERS = [f"x-ratelimit-{kind}-{what}-minute" for kind in ("limit", "remaining")
                      for what in ("req", "tokens")]
MAX_BODY_BYTES = 128 * 1024 * 1024  # 8 images of 10 MB, base64-encoded, fit with room to spare


BODY_TIMEOUT = 60.0  # seconds for a whole request body, however it trickles in


class _BodyTooLarge(BaseException):  # not Exception: FastAPI turns those into a 400 while reading
    pass


class _BodyTooSlow(BaseException):
    pass


class BodySizeLimit:
    """413 for a body larger than the limit: at once when Content-Length announces it, else as
    soon as the bytes actually received pass it (chunked bodies, lying lengths), so no more of it
    is read or buffered; 408 for a body not complete within `timeout` seconds (a chunked body
    that never ends). Plain ASGI (not BaseHTTPMiddleware), so handlers still see a client that
    hangs up."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = BODY_TIMEOUT):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _refusal(self, size: str) -> Response:
        return error_response(APIError(413, f"Request body of {size} bytes exceeds the limit of "
                                            f"{self.max_bytes} bytes"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refusal(str(int(length)))(scope, receive, send)
        received, started, body_done = 0, False, False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def counted_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the client's disconnect: no deadline on those
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._refusal(f"more than {self.max_bytes}")(scope, receive, send)
        except _BodyTooSlow:
            if not started:
                await error_response(APIError(408, f"Request body not received within {self.timeout:g} s"))(
                    scope, receive, send)


def create_app(registry: ModelRegistry, platform: Platform, image_policy: ImagePolicy | None = None,
               cors_origins: list[str] | None = None, reasoning_output: str = "mistral",
               body_timeout: float = BODY_TIMEOUT, console: ConsoleSettings | None = None,
               public_url: str | None = None) -> FastAPI:
    """`reasoning_output`: how reasoning traces are returned unless a request says otherwise:
    "mistral" (thinking chunks in content) or "openai" (string content + reasoning_content).
    `console`: the console's settings (SMTP…); `public_url`: where people reach this server."""
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        registry.shutdown()
        platform.close()
        platform.store.dispose()

    app = FastAPI(title="magistral", version=__version__, lifespan=lifespan,
                  description="Mistral-compatible chat API served by magistral")
    app.state.registry = registry
    app.state.platform = platform
    platform.metrics.watch_models(registry.models)
    app.state.store = platform.store
    app.state.image_policy = image_policy or ImagePolicy()
    app.state.reasoning_output = reasoning_output
    install_error_handlers(app)

    if platform.enabled:  # innermost: it needs the caller's key and a bounded body
        app.add_middleware(Idempotency, store=platform.store)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES, timeout=body_timeout)
    app.add_middleware(AuthenticateBeforeBody)  # outermost: no key, no body read
    if cors_origins:  # browser apps on these origins may call the API with their users' keys
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600,
                           expose_headers=["Retry-After", *RATE_LIMIT_HEADERS])
    app.include_router(chat.router)
    app.include_router(completions.router)
    app.include_router(fim.router)
    app.include_router(embeddings.router)
    app.include_router(tokenize.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    from magistral.dashboard import routes as dashboard
    app.include_router(dashboard.router)
    if platform.enabled:  # people sign up, manage keys and budgets, explore usage
        from magistral.console.app import install as install_console
        install_console(app, platform, console, public_url)

    @app.get("/metrics", dependencies=[Depends(require_admin)], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.platform.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/health")
    async def health(request: Request) -> Any:
        models = request.app.state.registry.everything
        state = {"status": "ok", "models": [m.id for m in models],
                 "active_sequences": sum(m.engine.active_count for m in models),
                 "queued_sequences": sum(m.engine.queued_count for m in models)}

        def check() -> None:
            request.app.state.store.check_reachable()
            request.app.state.platform.limiter.check()

        try:
            await asyncio.to_thread(check)
        except (StorageUnavailable, LimiterUnavailable) as exc:  # a load balancer takes this replica out
            return JSONResponse({**state, "status": "unavailable", "problem": str(exc)}, status_code=503)
        return state

    return app
