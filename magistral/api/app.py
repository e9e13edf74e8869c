"""The FastAPI application: routes, error shapes, shared state (models, store)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from magistral import __version__
from magistral.api.errors import APIError, error_response, install_error_handlers
from magistral.api.routes import chat, models
from magistral.engine.registry import ModelRegistry
from magistral.platform.store import Store

MAX_BODY_BYTES = 128 * 1024 * 1024  # 8 images of 10 MB, base64-encoded, fit with room to spare


def create_app(registry: ModelRegistry, store: Store) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        registry.shutdown()
        store.dispose()

    app = FastAPI(title="magistral", version=__version__, lifespan=lifespan,
                  description="Mistral-compatible chat API served by magistral")
    app.state.registry = registry
    app.state.store = store
    install_error_handlers(app)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_response(APIError(413, f"Request body of {int(length)} bytes exceeds the "
                                           f"limit of {MAX_BODY_BYTES} bytes"))
        return await call_next(request)
    app.include_router(chat.router)
    app.include_router(models.router)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        models = request.app.state.registry.models
        return {"status": "ok", "models": [m.id for m in models],
                "active_sequences": sum(m.engine.active_count for m in models),
                "queued_sequences": sum(m.engine.queued_count for m in models)}

    return app
