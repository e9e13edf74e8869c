"""The platform layer in front of the engine: who may call (keys, accounts, expiry), how much
(rate limits with token reservations), and what it costs (the usage journal, metrics)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from magistral.platform.budgets import Budgets
from magistral.platform.calls import MeteredCall, RateLimited, refusal_message, reservation
from magistral.platform.config import Limits, PlatformConfig
from magistral.platform.keys import KeyInfo, verify_key
from magistral.platform.metering import UsageJournal, reconcile
from magistral.platform.metrics import Metrics
from magistral.platform.ratelimit import Decision, RateLimiter, make_rate_limiter
from magistral.platform.store import Store


class AccessDenied(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Platform:
    store: Store
    config: PlatformConfig
    limiter: RateLimiter
    journal: UsageJournal
    metrics: Metrics
    replica: str
    enabled: bool = True  # False only for benchmarks that measure what this layer costs
    budgets: Budgets = field(default=None)  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if self.budgets is None:
            self.budgets = Budgets(self.store, self.config)

    @classmethod
    def create(cls, store: Store, *, redis_url: str | None = None, config: PlatformConfig | None = None,
               replica: str | None = None, enabled: bool = True, namespace: str = "magistral") -> Platform:
        replica = replica or socket.gethostname()
        reconcile(store, replica)  # rows a killed predecessor left open
        return cls(store=store, config=config or PlatformConfig(),
                   limiter=make_rate_limiter(redis_url, namespace), journal=UsageJournal(store),
                   metrics=Metrics(), replica=replica, enabled=enabled)

    def authenticate(self, secret: str) -> KeyInfo:
        self.store.check_writable()
        key = verify_key(self.store, secret)
        if key is None:
            raise AccessDenied(401, "Unauthorized: invalid or revoked API key")
        if key.expired:
            raise AccessDenied(401, f"Unauthorized: API key expired on {key.expires_at:%Y-%m-%d %H:%M} UTC",
                               code="key_expired")
        if key.account_status == "pending":
            raise AccessDenied(403, f"Account '{key.account}' is pending: its billing has not been activated "
                               "yet, so its keys are not served. They work once the operator activates it.",
                               code="account_inactive")
        if key.account_status != "active":
            raise AccessDenied(403, f"Account '{key.account}' is {key.account_status}: its billing is not "
                               "active, so its keys are not served. Contact the operator to reactivate it.",
                               code="account_inactive")
        return key

    def limits(self, key: KeyInfo) -> Limits:
        default = self.config.limits(key.tier)
        return Limits(rpm=key.rpm if key.rpm is not None else default.rpm,
                      tpm=key.tpm if key.tpm is not None else default.tpm)

    def admit(self, key: KeyInfo, request_id: str, tokens: int) -> Decision:
        limits = self.limits(key)
        decision = self.limiter.acquire(key.id, request_id, limits.rpm, limits.tpm, tokens)
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.reason).inc()
        return decision

    def open_call(self, key: KeyInfo, model: str, prompt_tokens: int | list[int], *,
                  max_tokens: int | None = 0, n: int = 1, max_context: int | None = None) -> MeteredCall:
        """Admit one request under its key's limits and open its metered call. `prompt_tokens`:
        the prompt's length, or each prompt's for a request with several; `max_tokens`: each
        completion's cap (None: the platform's default reservation; 0 for endpoints that generate
        nothing, such as embeddings); `n` completions per prompt. Raises RateLimited (429) when
        it does not fit, BudgetExceeded (402) when it could pass a monthly budget."""
        prompts = prompt_tokens if isinstance(prompt_tokens, list) else [prompt_tokens]
        call = MeteredCall(self, key, model, sum(prompts))
        if not self.enabled:
            return call
        self.store.check_writable()  # StorageUnavailable (503): nothing is served unbilled
        default = self.config.max_reserve_tokens
        reserve = sum(reservation(p, max_tokens, n, max_context if max_context is not None else p + default,
                                  default) for p in prompts)
        # before the window; a call admitted here is released when it closes (calls.py)
        self.budgets.check(key, model, call.prompt_tokens, reserve - call.prompt_tokens, call.id)
        decision = self.admit(key, call.id, reserve)
        if not decision.allowed:
            self.budgets.release(call.id)
            raise RateLimited(refusal_message(decision.reason, reserve, decision.limit_tokens,
                                              decision.remaining_tokens, decision.limit_requests),
                              code=f"rate_limit_{decision.reason}", headers=decision.headers())
        call.headers = decision.headers()
        return call

    def remaining(self, key: KeyInfo) -> Decision:
        limits = self.limits(key)
        return self.limiter.status(key.id, limits.rpm, limits.tpm)

    def close(self) -> None:
        self.journal.close()
