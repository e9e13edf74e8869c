"""Per-key limits on requests and tokens per minute, over a sliding 60-second window.

A request reserves its tokens (prompt + max_tokens, or a cap) when it is admitted and settles
them to what it used when it ends, so concurrent requests cannot overshoot. Each admitted
request is an entry (time, tokens) in its key's window; entries leave the window after 60 s,
which is also what frees the reservation of a request whose server was killed.

`MemoryRateLimiter` serves one process; `RedisRateLimiter` keeps the window in Redis and admits
atomically in a Lua script on Redis' clock, so several replicas share exact limits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

WINDOW_S = 60.0

log = logging.getLogger("magistral.ratelimit")


@dataclass
class Decision:
    allowed: bool
    limit_requests: int
    remaining_requests: int
    limit_tokens: int
    remaining_tokens: int
    retry_after: float = 0.0  # seconds until the request could be admitted
    reason: str = ""  # "requests" or "tokens" when refused

    def headers(self) -> dict[str, str]:
        headers = {"x-ratelimit-limit-req-minute": str(self.limit_requests),
                   "x-ratelimit-remaining-req-minute": str(max(0, self.remaining_requests)),
                   "x-ratelimit-limit-tokens-minute": str(self.limit_tokens),
                   "x-ratelimit-remaining-tokens-minute": str(max(0, self.remaining_tokens))}
        if not self.allowed:
            headers["retry-after"] = str(max(1, int(self.retry_after + 0.999)))
        return headers


class RateLimiter(Protocol):
    def acquire(self, key_id: int, request_id: str, rpm: int, tpm: int, tokens: int,
                now: float | None = None) -> Decision: ...

    def settle(self, key_id: int, request_id: str, tokens: int) -> None: ...

    def status(self, key_id: int, rpm: int, tpm: int, now: float | None = None) -> Decision: ...

    def check(self) -> None:
        """Raise LimiterUnavailable when admission would fail (for /health)."""


def _refusal(entries: list[tuple[float, int]], rpm: int, tpm: int, tokens: int, now: float,
             window: float) -> Decision | None:
    """Why a request of `tokens` cannot join a window holding `entries` (oldest first)."""
    used = sum(t for _, t in entries)
    if len(entries) + 1 > rpm:
        return Decision(False, rpm, rpm - len(entries), tpm, tpm - used,
                        entries[0][0] + window - now if entries else window, "requests")
    if used + tokens > tpm:
        wait, freed = window, 0
        for at, spent in entries:
            freed += spent
            if used - freed + tokens <= tpm:
                wait = at + window - now
                break
        return Decision(False, rpm, rpm - len(entries), tpm, tpm - used, wait, "tokens")
    return None


class MemoryRateLimiter:
    def check(self) -> None:
        """In this process: always available."""

    def __init__(self, window: float = WINDOW_S):
        self.window = window
        self._keys: dict[int, OrderedDict[str, list]] = {}
        self._lock = threading.Lock()

    def _entries(self, key_id: int, now: float) -> OrderedDict[str, list]:
        entries = self._keys.setdefault(key_id, OrderedDict())
        while entries and next(iter(entries.values()))[0] <= now - self.window:
            entries.popitem(last=False)
        return entries

    def acquire(self, key_id: int, request_id: str, rpm: int, tpm: int, tokens: int,
                now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        with self._lock:
            entries = self._entries(key_id, now)
            window = [(at, spent) for at, spent in entries.values()]
            if refused := _refusal(window, rpm, tpm, tokens, now, self.window):
                return refused
            entries[request_id] = [now, tokens]
            used = sum(t for _, t in window) + tokens
            return Decision(True, rpm, rpm - len(entries), tpm, tpm - used)

    def settle(self, key_id: int, request_id: str, tokens: int) -> None:
        with self._lock:
            entry = self._keys.get(key_id, {}).get(request_id)
            if entry is not None:
                entry[1] = tokens

    def status(self, key_id: int, rpm: int, tpm: int, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        with self._lock:
            entries = self._entries(key_id, now)
            used = sum(t for _, t in entries.values())
            return Decision(True, rpm, rpm - len(entries), tpm, tpm - used)


# KEYS: the window's sorted set (request id → admission time) and hash (request id → tokens).
# ARGV: now ('' = Redis' own clock), window, rpm, tpm, tokens, request id ('' = only look).
_ACQUIRE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local spent = {}
if #entries > 0 then
  local members = {}
  for i = 1, #entries, 2 do members[#members + 1] = entries[i] end
  spent = redis.call('HMGET', KEYS[2], unpack(members))
end
local flat = {}
for i = 1, #entries, 2 do
  flat[#flat + 1] = entries[i + 1]
  flat[#flat + 1] = tostring(tonumber(spent[(i + 1) / 2]) or 0)
end
if ARGV[6] == '' then
  return {0, tostring(now), flat}
end
local rpm, tpm, need = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local used = 0
for i = 2, #flat, 2 do used = used + tonumber(flat[i]) end
if #entries / 2 + 1 > rpm or used + need > tpm then
  return {0, tostring(now), flat}
end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('HSET', KEYS[2], ARGV[6], need)
local ttl = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, tostring(now), flat}
"""

_SETTLE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""


class LimiterUnavailable(RuntimeError):
    """The shared limiter (Redis) cannot be reached. Limits fail closed: requests are refused
    (503) rather than served unlimited, until it answers again."""


class RedisRateLimiter:
    """Limits shared by replicas. When Redis is down, admission fails closed (LimiterUnavailable,
    answered 503); settling a finished request's tokens is skipped with a warning (its
    reservation leaves the window by itself), so billing never waits on Redis."""

    def __init__(self, url: str, namespace: str = "magistral", window: float = WINDOW_S):
        import redis

        self._errors = redis.RedisError
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.namespace, self.window = namespace, window
        self._acquire = self.client.register_script(_ACQUIRE)
        self._settle = self.client.register_script(_SETTLE)

    def check(self) -> None:
        try:
            self.client.ping()
        except self._errors as exc:
            raise LimiterUnavailable(f"the rate limiter (Redis) is unreachable: {type(exc).__name__}") \
                from exc

    def _keys(self, key_id: int) -> list[str]:
        base = f"{self.namespace}:ratelimit:{key_id}"
        return [f"{base}:admitted", f"{base}:tokens"]

    def _run(self, key_id: int, now: float | None, rpm: int, tpm: int, tokens: int, request_id: str
             ) -> tuple[bool, float, list[tuple[float, int]]]:
        try:
            admitted, at, flat = self._acquire(keys=self._keys(key_id), args=[
                "" if now is None else repr(now), self.window, rpm, tpm, tokens, request_id])
        except self._errors as exc:
            raise LimiterUnavailable(f"the rate limiter (Redis) is unreachable: {type(exc).__name__}") \
                from exc
        entries = [(float(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        return bool(admitted), float(at), entries

    def acquire(self, key_id: int, request_id: str, rpm: int, tpm: int, tokens: int,
                now: float | None = None) -> Decision:
        admitted, at, entries = self._run(key_id, now, rpm, tpm, tokens, request_id)
        if not admitted:
            refused = _refusal(entries, rpm, tpm, tokens, at, self.window)
            assert refused is not None
            return refused
        used = sum(t for _, t in entries) + tokens
        return Decision(True, rpm, rpm - len(entries) - 1, tpm, tpm - used)

    def settle(self, key_id: int, request_id: str, tokens: int) -> None:
        try:
            self._settle(keys=self._keys(key_id)[1:], args=[request_id, tokens])
        except self._errors as exc:
            log.warning("rate limiter: could not settle request %s (%s); its reservation stands "
                        "until it leaves the window", request_id, type(exc).__name__)

    def status(self, key_id: int, rpm: int, tpm: int, now: float | None = None) -> Decision:
        _, _, entries = self._run(key_id, now, rpm, tpm, 0, "")
        return Decision(True, rpm, rpm - len(entries), tpm, tpm - sum(t for _, t in entries))


def make_rate_limiter(redis_url: str | None, namespace: str = "magistral") -> RateLimiter:
    return RedisRateLimiter(redis_url, namespace) if redis_url else MemoryRateLimiter()
