"""The synchronous client: `client.chat.complete`, `client.chat.stream`, `client.models.list`,
`client.completions.create`, `client.embeddings.create`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

from magistral.client.common import chat_body, raise_for_status, settings, sse_events
from magistral.client.errors import APIConnectionError
from magistral.client.retry import RETRY_STATUSES, backoff
from magistral.client.types import ChatResponse, StreamEvent


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 600.0, max_retries: int = 2):
        url, headers = settings(base_url, api_key)
        self.max_retries = max_retries
        self._http = httpx.Client(base_url=url, timeout=timeout, headers=headers)
        self.chat = Chat(self)
        self.models = Models(self)
        self.completions = Completions(self)
        self.embeddings = Embeddings(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              stream: bool = False) -> httpx.Response:
        """One request, retried on 429/5xx/connection errors; a streamed response is returned
        open (status checked, body unread) and must be closed by the caller."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                request = self._http.build_request(method, path, json=body)
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last:
                    raise APIConnectionError(str(exc)) from exc
                time.sleep(backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            if last or response.status_code not in RETRY_STATUSES:
                raise_for_status(response)
            time.sleep(backoff(attempt, dict(response.headers)))
        raise AssertionError("unreachable")


class Chat:
    def __init__(self, client: Client):
        self._client = client

    def complete(self, *, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatResponse:
        body = chat_body(model, messages, False, params)
        response = self._client._send("POST", "/v1/chat/completions", body)
        return ChatResponse(response.json())

    def stream(self, *, model: str, messages: list[dict[str, Any]], **params: Any) -> Iterator[StreamEvent]:
        """Events as they arrive; retried only before the first one."""
        body = chat_body(model, messages, True, params)
        response = self._client._send("POST", "/v1/chat/completions", body, stream=True)
        try:
            for line in response.iter_lines():
                events = sse_events(line)
                if events is None:
                    return
                yield from events
        finally:
            response.close()


class Models:
    def __init__(self, client: Client):
        self._client = client

    def list(self) -> list[dict[str, Any]]:
        return self._client._send("GET", "/v1/models").json()["data"]

    def retrieve(self, model: str) -> dict[str, Any]:
        return self._client._send("GET", f"/v1/models/{model}").json()


class Completions:
    def __init__(self, client: Client):
        self._client = client

    def create(self, *, model: str, prompt: str | list[str] | list[int] | list[list[int]],
               **params: Any) -> dict[str, Any]:
        """Legacy text completion (`/v1/completions`): the response as JSON, logprobs included."""
        response = self._client._send("POST", "/v1/completions", {"model": model, "prompt": prompt, **params})
        return response.json()


class Embeddings:
    def __init__(self, client: Client):
        self._client = client

    def create(self, *, model: str, input: str | list[str], **params: Any) -> list[list[float]]:
        """One vector per input, in input order."""
        body = {"model": model, "input": input, **params}
        data = self._client._send("POST", "/v1/embeddings", body).json()["data"]
        return [row["embedding"] for row in sorted(data, key=lambda row: row["index"])]
