"""Monthly budgets: an account's (and optionally a key's) spending cap for the calendar month.

Checked where every metered request is admitted (`Platform.open_call`), before the rate limiter:
a request is refused when the month's spend so far, plus what the requests still running on this
replica may cost at most, plus what this one may cost at most (its reservation: prompt +
max_tokens at list price) would pass a budget. An account's spend is its invoice so far (volume
tiers included); a key's is its usage at list price (tiers belong to the account). Requests
running on other replicas are not held here: together, replicas may pass a budget by what their
concurrent requests spend.

Listeners hear when spend reaches 80% of a budget and when a request is refused at 100%; the
console sends its budget mails from there (once per budget, threshold and month).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from magistral.platform.billing import MICRO, invoice_for, list_cost, month_bounds
from magistral.platform.config import PlatformConfig
from magistral.platform.keys import KeyInfo
from magistral.platform.store import Store, UsageDaily

log = logging.getLogger("magistral.budgets")
WARN_AT = Decimal("0.8")
STATUS = 402  # Payment Required: no retry will help until the budget is raised or the month ends
CODE = "budget_exceeded"


class BudgetExceeded(Exception):
    """402 `budget_exceeded`: the request would pass its account's or key's monthly budget."""

    status = STATUS
    code = CODE

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BudgetEvent:
    """Spend reached `threshold` percent (80 or 100) of a budget. key_id None: the account's."""
    account_id: int
    account: str
    key_id: int | None
    key_name: str
    month: str
    threshold: int
    spend_micros: int
    budget_micros: int


def micros(amount: Decimal) -> int:
    return int(amount / MICRO)


def dollars(amount_micros: int) -> str:
    return f"${Decimal(amount_micros) * MICRO:.2f}" if amount_micros % 10_000 == 0 \
        else f"${Decimal(amount_micros) * MICRO:.6f}"


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def account_spend(store: Store, config: PlatformConfig, account_id: int, month: str) -> int:
    """The account's invoice total for the month so far, in micro-dollars."""
    return invoice_for(store, config, account_id, "", month).total_micros


def key_spend(store: Store, config: PlatformConfig, key_id: int, month: str) -> int:
    """One key's usage this month at list price, in micro-dollars."""
    start, end = month_bounds(month)
    with store.session() as s:
        rows = s.execute(select(UsageDaily.model, UsageDaily.prompt_tokens, UsageDaily.completion_tokens)
                         .where(UsageDaily.key_id == key_id, UsageDaily.day >= start,
                                UsageDaily.day < end)).all()
    return sum(micros(list_cost(config, model, prompt, completion)) for model, prompt, completion in rows)


class Budgets:
    def __init__(self, store: Store, config: PlatformConfig):
        self.store, self.config = store, config
        self.listeners: list[Callable[[BudgetEvent], None]] = []
        # what running requests under a budget may still cost: call id → (account id, key id, micros)
        self._held: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def check(self, key: KeyInfo, model: str, prompt_tokens: int, completion_tokens: int,
              call_id: str = "") -> None:
        """Raise BudgetExceeded when this request, at most prompt + completion tokens, could pass
        the key's or its account's budget; else hold its worst cost under `call_id` until
        `release`. Reads the database only for keys that have a budget."""
        if key.account_budget_micros is None and key.budget_micros is None:
            return
        month = this_month()
        worst = micros(list_cost(self.config, model, prompt_tokens, completion_tokens))
        scopes = []
        if key.account_budget_micros is not None:
            spend = account_spend(self.store, self.config, key.account_id, month)
            scopes.append((None, f"account '{key.account}'", spend, key.account_budget_micros))
        if key.budget_micros is not None:
            spend = key_spend(self.store, self.config, key.id, month)
            scopes.append((key.id, f"key '{key.name}'", spend, key.budget_micros))
        with self._lock:
            for key_id, who, spend, budget in scopes:
                running = sum(held for account, k, held in self._held.values()
                              if (k == key_id if key_id is not None else account == key.account_id))
                if spend >= budget * WARN_AT:
                    self._tell(key, key_id, month, 80, spend, budget)
                if spend + running + worst > budget:
                    self._tell(key, key_id, month, 100, spend, budget)
                    pending = f", requests still running could cost up to {dollars(running)}" \
                        if running else ""
                    raise BudgetExceeded(
                        f"Monthly budget reached: {who} has spent {dollars(spend)} of its {dollars(budget)} "
                        f"budget for {month}{pending}, and this request could cost up to {dollars(worst)} "
                        "(prompt + max_tokens at list price). Raise the budget in the console, lower "
                        "max_tokens, or wait for next month.")
            if call_id:
                self._held[call_id] = (key.account_id, key.id, worst)

    def release(self, call_id: str) -> None:
        """The call has ended: what it spent is in the usage rows now."""
        with self._lock:
            self._held.pop(call_id, None)

    def _tell(self, key: KeyInfo, key_id: int | None, month: str, threshold: int, spend: int,
              budget: int) -> None:
        event = BudgetEvent(key.account_id, key.account, key_id, key.name if key_id else "", month,
                            threshold, spend, budget)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a mail that cannot go out must not fail the request
                log.exception("budget listener failed for %s", event)
