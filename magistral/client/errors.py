"""Exceptions of the SDK: each carries what the server said."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Base of every error the client raises."""


class APIConnectionError(APIError):
    """The server could not be reached (after the retries)."""


class APIStatusError(APIError):
    """The server answered with an error status; `body` is its (Mistral-style) error object."""

    def __init__(self, status_code: int, body: Any, headers: dict[str, str] | None = None):
        self.status_code, self.body, self.headers = status_code, body, headers or {}
        message = body.get("message") if isinstance(body, dict) else body
        if isinstance(message, dict | list):
            message = str(message)
        self.message = message or ""
        super().__init__(f"HTTP {status_code}: {self.message}")


class RateLimitError(APIStatusError):
    """429: the key is over its requests or tokens per minute."""


def status_error(status_code: int, body: Any, headers: dict[str, str]) -> APIStatusError:
    cls = RateLimitError if status_code == 429 else APIStatusError
    return cls(status_code, body, headers)
