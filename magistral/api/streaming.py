"""Server-sent events in Mistral's chat.completion.chunk shape."""

from __future__ import annotations

import json
from typing import Any


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def chunk(request_id: str, created: int, model: str, delta: dict[str, Any],
          finish_reason: str | None = None, usage: dict[str, int] | None = None,
          logprobs: dict[str, Any] | None = None, index: int = 0) -> bytes:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    body: dict[str, Any] = {
        "id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [choice],
    }
    if usage is not None:  # only on the last chunk: never send "usage": null
        body["usage"] = usage
    return sse(body)
