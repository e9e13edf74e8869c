"""What the sync and async clients share: configuration, request bodies, error decoding."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from magistral.client.errors import status_error
from magistral.client.types import StreamEvent, stream_events

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    base_url = base_url or os.environ.get("MAGISTRAL_BASE_URL", DEFAULT_BASE_URL)
    api_key = api_key or os.environ.get("MAGISTRAL_API_KEY", "")
    return base_url.rstrip("/"), {"Authorization": f"Bearer {api_key}"}


def chat_body(model: str, messages: list[dict[str, Any]], stream: bool, params: dict[str, Any]
              ) -> dict[str, Any]:
    return {"model": model, "messages": messages, **({"stream": True} if stream else {}), **params}


def raise_for_status(response: httpx.Response) -> None:
    """Raise the SDK's error for a 4xx/5xx response (its body must have been read)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = response.text
    raise status_error(response.status_code, body, dict(response.headers))


def sse_events(line: str) -> list[StreamEvent] | None:
    """Events of one SSE line; None at `data: [DONE]`."""
    if not line.startswith("data: "):
        return []
    data = line[len("data: "):]
    if data == "[DONE]":
        return None
    return stream_events(json.loads(data))
