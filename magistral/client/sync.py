"""Synchronous httpx client: chat completions (plain and streamed) and models."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


class APIStatusError(Exception):
    """The server answered with an error; `body` is its Mistral-style error object."""

    def __init__(self, status_code: int, body: Any):
        self.status_code, self.body = status_code, body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status_code}: {message}")


@dataclass
class StreamEvent:
    kind: str  # "text", "thinking" or "end"
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 600.0):
        base_url = base_url or os.environ.get("MAGISTRAL_BASE_URL", "http://127.0.0.1:8000")
        api_key = api_key or os.environ.get("MAGISTRAL_API_KEY", "")
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def models(self) -> list[dict[str, Any]]:
        return self._check(self._http.get("/v1/models")).json()["data"]

    def complete(self, messages: list[dict[str, Any]], model: str, **params: Any) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params}
        return self._check(self._http.post("/v1/chat/completions", json=body)).json()

    def stream(self, messages: list[dict[str, Any]], model: str, **params: Any
               ) -> Iterator[StreamEvent]:
        body = {"model": model, "messages": messages, "stream": True, **params}
        with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    return
                yield from _events(json.loads(data))

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise APIStatusError(response.status_code, body)
        return response


def _events(payload: dict[str, Any]) -> Iterator[StreamEvent]:
    choice = payload["choices"][0]
    content = choice.get("delta", {}).get("content")
    if isinstance(content, str) and content:
        yield StreamEvent("text", content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "thinking":
                yield StreamEvent("thinking", "".join(t.get("text", "") for t in part["thinking"]))
            elif part.get("type") == "text":
                yield StreamEvent("text", part["text"])
    if choice.get("finish_reason"):
        yield StreamEvent("end", finish_reason=choice["finish_reason"], usage=payload.get("usage"))
