"""When to try a request again and how long to wait: 429 and 5xx (and lost connections) are
retried with exponential backoff and jitter, or after the server's Retry-After."""

from __future__ import annotations

import email.utils
import random
import time

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_DELAY = 60.0


def retry_after(headers: dict[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    value = (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def backoff(attempt: int, headers: dict[str, str] | None = None, base: float = 0.5) -> float:
    """Delay before retry number `attempt` (0-based)."""
    told = retry_after(headers)
    if told is not None:
        return min(told, MAX_DELAY)
    return min(base * 2 ** attempt, MAX_DELAY) * (0.5 + random.random() / 2)
