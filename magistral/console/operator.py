"""What operators do to accounts — activate, suspend, change tier — each audited. The console's
operator page, `magistral accounts activate|suspend|set-tier` and the billing hook all call
these, so the rules and the log are one.

The activation interface for a payment integration: call `change_status(store, name, "active",
actor="billing:<provider>", reference=...)` from Python, or POST to `/console/hooks/billing`
with an admin API key (`magistral keys create --admin`) and `{"account": NAME, "status":
"active" | "suspended", "reference": "<payment id>"}`."""

from __future__ import annotations

from typing import Any

from magistral.console import audit
from magistral.platform.accounts import get_account, list_accounts, set_status, set_tier
from magistral.platform.budgets import account_spend, this_month
from magistral.platform.config import PlatformConfig
from magistral.platform.store import Store


class NoSuchAccount(LookupError):
    pass


def change_status(store: Store, name: str, status: str, actor: str, **detail: Any) -> None:
    before = get_account(store, name)
    if before is None:
        raise NoSuchAccount(name)
    set_status(store, name, status)  # ValueError for an unknown status
    audit.record(store, actor, f"status:{status}", before.id, before=before.billing_status, **detail)


def change_tier(store: Store, config: PlatformConfig, name: str, tier: str, actor: str) -> None:
    before = get_account(store, name)
    if before is None:
        raise NoSuchAccount(name)
    set_tier(store, name, tier, config.account_tiers)
    audit.record(store, actor, "tier", before.id, before=before.tier, after=tier)


def overview(store: Store, config: PlatformConfig) -> list[dict[str, Any]]:
    """Every account with its tier, status, budget and month-to-date spend (its invoice so far)."""
    month = this_month()
    return [{"id": a.id, "name": a.name, "tier": a.tier, "status": a.billing_status,
             "created_at": a.created_at.isoformat(), "budget_micros": a.budget_micros,
             "month": month, "spend_micros": account_spend(store, config, a.id, month)}
            for a in list_accounts(store)]
