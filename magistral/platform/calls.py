"""One metered call: what every endpoint that spends tokens goes through.

`Platform.open_call` admits a request under its key's limits (reserving prompt + n × max_tokens,
or refusing with `RateLimited`), and returns a `MeteredCall` that owns the request's single usage
row. The rule "a client never holds an unbilled token" lives here, not in the routes:

- `await checkpoint(tokens)` before sending tokens of a stream: the row is durable first;
- `await finish(tokens, status)` before sending the last chunk or a JSON answer: the final row,
  the settled reservation and the metrics;
- `abandon(tokens, status)` when the request is torn down (client gone, error): the same without
  awaiting, for a task that may be cancelled.
- `await void(status)` when the request failed before the client received anything it asked
  for (an engine failure answered with an error): nothing is billed, the prompt included, so a
  client that retries the failure pays once.

Only the first of `finish`/`abandon` counts; later ones are ignored.

`checkpoint`, `finish` and `abandon` take the completion's tokens and, of those, its thinking
tokens (reasoning traces, counted by `chat.reasoning.ThinkingCounter`; billed as output, like the
rest). `usage()` reports the counts last billed: the usage a client reads is the usage recorded.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from magistral.platform.keys import KeyInfo
from magistral.platform.metering import IN_PROGRESS, Usage

if TYPE_CHECKING:
    from magistral.platform.gateway import Platform


class RateLimited(Exception):
    """429: the request does not fit its key's limits. `code` is rate_limit_requests or
    rate_limit_tokens; `headers` carry Retry-After and the x-ratelimit-* quota."""

    status = 429

    def __init__(self, message: str, code: str, headers: dict[str, str]):
        super().__init__(message)
        self.message, self.code, self.headers = message, code, headers


def reservation(prompt_tokens: int, max_tokens: int | None, n: int, max_context: int,
                default_max_tokens: int) -> int:
    """Tokens a request may spend at most: its prompt and n completions of max_tokens (or the
    platform's default), each capped by what is left of the model's context."""
    room = max(0, max_context - prompt_tokens)
    per_choice = min(room, default_max_tokens if max_tokens is None else max_tokens)
    return prompt_tokens + n * max(0, per_choice)


@dataclass
class MeteredCall:
    platform: Platform
    key: KeyInfo
    model: str
    prompt_tokens: int
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the response
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    closed: bool = False
    completion_tokens: int = 0  # as last billed
    thinking_tokens: int = 0  # of the completion tokens, those of reasoning traces

    def _row(self, status: str) -> Usage:
        return Usage(request_id=self.id, account_id=self.key.account_id, key_id=self.key.id,
                     model=self.model, prompt_tokens=self.prompt_tokens,
                     completion_tokens=self.completion_tokens, thinking_tokens=self.thinking_tokens,
                     status=status, replica=self.platform.replica,
                     latency_ms=int((time.perf_counter() - self.started) * 1000))

    def _spent(self, completion_tokens: int, thinking_tokens: int) -> None:
        # thinking tokens are a part of the completion's: clamped, not raised, on this billing path
        self.completion_tokens = completion_tokens
        self.thinking_tokens = max(0, min(thinking_tokens, completion_tokens))

    async def checkpoint(self, completion_tokens: int, thinking_tokens: int = 0) -> None:
        """Bill the tokens generated so far; returns once that is durable (send them after)."""
        if self.closed:
            raise RuntimeError("checkpoint after the call was finished")
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.platform.metrics.ttft.labels(self.model).observe(self.first_token_at - self.started)
        self._spent(completion_tokens, thinking_tokens)
        if self.platform.enabled:
            await self.platform.journal.write(self._row(IN_PROGRESS))

    async def finish(self, completion_tokens: int, status: str, thinking_tokens: int = 0) -> None:
        """The row's final state, durable when this returns; settles the reservation."""
        if self._close(completion_tokens, thinking_tokens, status) and self.platform.enabled:
            try:
                await self.platform.journal.write(self._row(status))
            finally:  # the budget's hold ends once the spend it stood for is in the usage rows
                self.platform.budgets.release(self.id)

    def abandon(self, completion_tokens: int, status: str, thinking_tokens: int = 0) -> None:
        """The final state of a call being torn down: queued, not awaited (the caller's task may be
        cancelled). A no-op after `finish`."""
        if self._close(completion_tokens, thinking_tokens, status) and self.platform.enabled:
            self.platform.journal.write_nowait(self._row(status))
            self.platform.budgets.release(self.id)

    async def void(self, status: str = "error") -> None:
        """End the call unbilled: its row records the failure with zero tokens."""
        if self.closed:
            return
        self.prompt_tokens = 0
        await self.finish(0, status)

    def _close(self, completion_tokens: int, thinking_tokens: int, status: str) -> bool:
        if self.closed:
            return False
        self.closed = True
        self._spent(completion_tokens, thinking_tokens)
        if self.platform.enabled:
            self.platform.limiter.settle(self.key.id, self.id, self.prompt_tokens + completion_tokens)
        self.platform.metrics.observe_request(self.model, status, self.prompt_tokens, completion_tokens,
                                              time.perf_counter() - self.started)
        return True

    def usage(self) -> dict[str, Any]:
        """The API's usage object, as billed. Thinking tokens are within completion_tokens; they
        are broken out where OpenAI's SDK reads them (`completion_tokens_details.reasoning_tokens`;
        Mistral's SDK keeps unknown usage fields in `additional_properties`)."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "completion_tokens_details": {"reasoning_tokens": self.thinking_tokens}}


def refusal_message(reason: str, reserve: int, limit_tokens: int, remaining_tokens: int,
                    limit_requests: int) -> str:
    if reason == "tokens" and reserve > limit_tokens:
        return (f"Rate limit exceeded: this request reserves {reserve} tokens (prompt + max_tokens), more "
                f"than this key's {limit_tokens} tokens per minute; lower max_tokens")
    if reason == "tokens":
        return (f"Rate limit exceeded: {limit_tokens} tokens per minute for this key; "
                f"this request reserves {reserve}, {max(0, remaining_tokens)} remain")
    return f"Rate limit exceeded: {limit_requests} requests per minute for this key"
