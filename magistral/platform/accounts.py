"""Accounts (organisations): they own keys and are billed; only `active` ones are served."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from magistral.platform.store import Account, Store

# pending: signed up in the console, waiting for the operator (or a payment integration) to activate it
STATUSES = ("active", "suspended", "pending")
DEFAULT_ACCOUNT = "default"  # the operator's own account, for keys created without --account


@dataclass
class AccountInfo:
    id: int
    name: str
    tier: str
    billing_status: str
    created_at: datetime
    budget_micros: int | None = None


def create_account(store: Store, name: str, tier: str = "standard", status: str = "active") -> AccountInfo:
    if status not in STATUSES:
        raise ValueError(f"billing status must be one of {STATUSES}")
    with store.session() as s, s.begin():
        if s.scalar(select(Account).where(Account.name == name)) is not None:
            raise ValueError(f"account {name!r} exists already")
        row = Account(name=name, tier=tier, billing_status=status)
        s.add(row)
        s.flush()
        return _info(row)


def get_account(store: Store, name: str) -> AccountInfo | None:
    with store.session() as s:
        row = s.scalar(select(Account).where(Account.name == name))
        return _info(row) if row else None


def ensure_account(store: Store, name: str, tier: str = "standard") -> AccountInfo:
    existing = get_account(store, name)
    if existing is not None:
        return existing
    try:
        return create_account(store, name, tier=tier)
    except ValueError:  # created meanwhile by another process
        return get_account(store, name)  # type: ignore[return-value]


def list_accounts(store: Store) -> list[AccountInfo]:
    with store.session() as s:
        return [_info(a) for a in s.scalars(select(Account).order_by(Account.id))]


def set_status(store: Store, name: str, status: str) -> bool:
    if status not in STATUSES:
        raise ValueError(f"billing status must be one of {STATUSES}")
    with store.session() as s, s.begin():
        row = s.scalar(select(Account).where(Account.name == name))
        if row is None:
            return False
        row.billing_status = status
        return True


def set_tier(store: Store, name: str, tier: str, tiers: Iterable[str]) -> bool:
    """Move an account to another tier (its keys' default limits); `tiers`: the configured ones."""
    if tier not in tiers:
        raise ValueError(f"tier must be one of {sorted(tiers)}")
    with store.session() as s, s.begin():
        row = s.scalar(select(Account).where(Account.name == name))
        if row is None:
            return False
        row.tier = tier
        return True


def set_budget(store: Store, name: str, budget_micros: int | None) -> bool:
    """The account's monthly budget in micro-dollars (None: no budget)."""
    if budget_micros is not None and budget_micros < 0:
        raise ValueError("a budget cannot be negative")
    with store.session() as s, s.begin():
        row = s.scalar(select(Account).where(Account.name == name))
        if row is None:
            return False
        row.budget_micros = budget_micros
        return True


def _info(row: Account) -> AccountInfo:
    return AccountInfo(id=row.id, name=row.name, tier=row.tier, billing_status=row.billing_status,
                       created_at=row.created_at, budget_micros=row.budget_micros)
