"""The asynchronous client: the same surface as `Client`, with `await` and `async for`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from magistral.client.common import chat_body, raise_for_status, settings, sse_events
from magistral.client.errors import APIConnectionError
from magistral.client.retry import RETRY_STATUSES, backoff
from magistral.client.types import ChatResponse, StreamEvent


class AsyncClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 600.0, max_retries: int = 2):
        url, headers = settings(base_url, api_key)
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers)
        self.chat = AsyncChat(self)
        self.models = AsyncModels(self)
        self.completions = AsyncCompletions(self)
        self.embeddings = AsyncEmbeddings(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
                    stream: bool = False) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                request = self._http.build_request(method, path, json=body)
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last:
                    raise APIConnectionError(str(exc)) from exc
                await asyncio.sleep(backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            if last or response.status_code not in RETRY_STATUSES:
                raise_for_status(response)
            await asyncio.sleep(backoff(attempt, dict(response.headers)))
        raise AssertionError("unreachable")


class AsyncChat:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def complete(self, *, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatResponse:
        body = chat_body(model, messages, False, params)
        response = await self._client._send("POST", "/v1/chat/completions", body)
        return ChatResponse(response.json())

    async def stream(self, *, model: str, messages: list[dict[str, Any]], **params: Any
                     ) -> AsyncIterator[StreamEvent]:
        body = chat_body(model, messages, True, params)
        response = await self._client._send("POST", "/v1/chat/completions", body, stream=True)
        try:
            async for line in response.aiter_lines():
                events = sse_events(line)
                if events is None:
                    return
                for event in events:
                    yield event
        finally:
            await response.aclose()


class AsyncModels:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def list(self) -> list[dict[str, Any]]:
        return (await self._client._send("GET", "/v1/models")).json()["data"]

    async def retrieve(self, model: str) -> dict[str, Any]:
        return (await self._client._send("GET", f"/v1/models/{model}")).json()


class AsyncCompletions:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def create(self, *, model: str, prompt: str | list[str] | list[int] | list[list[int]],
                     **params: Any) -> dict[str, Any]:
        body = {"model": model, "prompt": prompt, **params}
        return (await self._client._send("POST", "/v1/completions", body)).json()


class AsyncEmbeddings:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def create(self, *, model: str, input: str | list[str], **params: Any) -> list[list[float]]:
        body = {"model": model, "input": input, **params}
        data = (await self._client._send("POST", "/v1/embeddings", body)).json()["data"]
        return [row["embedding"] for row in sorted(data, key=lambda row: row["index"])]
