"""Errors in Mistral's shape: {object: "error", message, type, param, code} (+ detail on 422)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from magistral.platform.budgets import BudgetExceeded
from magistral.platform.calls import RateLimited
from magistral.platform.ratelimit import LimiterUnavailable
from magistral.platform.store import StorageUnavailable

log = logging.getLogger("magistral.api")

_TYPES = {401: "authentication_error", 403: "authentication_error", 429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status) or (
            "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers


class ClientGone(Exception):
    """The client hung up before its answer was ready: nothing is sent (499 in the logs)."""


def storage_error() -> APIError:
    return APIError(503, "Service unavailable: the usage database cannot be written; requests are refused "
                    "so that none goes unbilled", headers={"Retry-After": "30"})


def error_response(err: APIError, extra: dict[str, Any] | None = None) -> JSONResponse:
    fields = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    # Mistral's clients read the flat fields, OpenAI's (openai-node shows nothing else) `error`
    body = {"object": "error", **fields, "error": fields, **(extra or {})}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return error_response(APIError(429, exc.message, code=exc.code, headers=exc.headers))

    @app.exception_handler(BudgetExceeded)
    async def budget_exceeded(_: Request, exc: BudgetExceeded) -> JSONResponse:
        return error_response(APIError(exc.status, exc.message, code=exc.code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(APIError(400, "Request body is not valid JSON: "
                                      + str(errors[0].get("ctx", {}).get("error", errors[0]["msg"]))))
        if any(tuple(e["loc"]) == ("body",) and e["type"] == "model_attributes_type" for e in errors):
            # e.g. curl -d without a JSON content type: the body never reached the JSON parser
            return error_response(APIError(400, "Request body must be a JSON object sent with "
                                           "'Content-Type: application/json'"))
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        first = errors[0]
        where = _location(tuple(first["loc"]))
        message = f"Invalid request: {where}: {first['msg']}" if where else first["msg"]
        return error_response(APIError(422, message, param=where or None), {"detail": detail})

    @app.exception_handler(LimiterUnavailable)
    async def limiter_unavailable(_: Request, exc: LimiterUnavailable) -> JSONResponse:
        log.error("%s: refusing requests (limits fail closed)", exc)
        return error_response(APIError(503, "Service unavailable: rate limits cannot be checked right now; "
                                       "retry shortly", headers={"Retry-After": "5"}))

    @app.exception_handler(StorageUnavailable)
    async def storage_unavailable(_: Request, exc: StorageUnavailable) -> JSONResponse:
        return error_response(storage_error())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "Not found: no such route"
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's words when json.loads itself fails, which valid JSON only does when deep
            message = "Request body could not be parsed: its JSON nests too deeply"
        return error_response(APIError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(APIError(500, "Internal server error"))
