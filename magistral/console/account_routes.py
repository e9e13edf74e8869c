"""One account's console: its status, budget and keys. Every route of an account (here and in
usage_routes, member_routes) takes its id in the path and checks membership first: someone
else's account answers 404, as one that does not exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.console import explorer
from magistral.console.people import aware
from magistral.console.web import check_csrf, console, manager, membership
from magistral.platform.accounts import set_budget
from magistral.platform.billing import MICRO
from magistral.platform.budgets import account_spend, key_spend, this_month
from magistral.platform.keys import KeyInfo, create_key, list_keys, revoke_key, set_key_budget
from magistral.platform.store import Account

router = APIRouter(prefix="/console/api/accounts/{account_id}", dependencies=[Depends(check_csrf)],
                   include_in_schema=False)

WHY = {"pending": "This account is pending: the operator has not activated its billing yet, so API calls "
                  "with its keys are refused (403, account_inactive). You can create keys now; they work "
                  "as soon as the account is activated.",
       "suspended": "This account is suspended: its billing is not in good standing, so API calls with its "
                    "keys are refused (403, account_inactive). Contact the operator.",
       "active": "This account is active: its keys are served."}


class KeyForm(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget_usd: str | None = Field(default=None, max_length=20)


class BudgetForm(BaseModel):
    budget_usd: str | None = Field(default=None, max_length=20)  # None or "": no budget


def budget_micros(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        amount = Decimal(text.strip().lstrip("$"))
    except InvalidOperation as exc:
        raise APIError(400, f"a budget is an amount of dollars, such as 25 or 12.50 (got {text!r})",
                       param="budget_usd") from exc
    if not amount.is_finite() or amount < 0 or amount > 10**9:
        raise APIError(400, "a budget is between $0 and $1,000,000,000", param="budget_usd")
    return int((amount / MICRO).to_integral_value())


def _usd(amount_micros: int | None) -> str | None:
    return None if amount_micros is None else str((Decimal(amount_micros) * MICRO).quantize(MICRO))


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment else None


def account_row(request: Request, account_id: int) -> Account:
    with console(request).store.session() as s:
        return s.get(Account, account_id)


def _key_of(request: Request, account_id: int, key_id: int) -> KeyInfo:
    """The account's key with this id; 404 for a key of another account, as for none."""
    account = account_row(request, account_id)
    for key in list_keys(console(request).store, account.name):
        if key.id == key_id:
            return key
    raise APIError(404, "Not found: no such key", code="not_found")


@router.get("")
async def overview(account_id: int, request: Request, who=Depends(membership)) -> dict[str, Any]:
    ctx = console(request)

    def read() -> dict[str, Any]:
        account = account_row(request, account_id)
        limits = ctx.platform.config.limits(account.tier)
        month = this_month()
        return {"id": account.id, "name": account.name, "tier": account.tier,
                "status": account.billing_status, "why": WHY.get(account.billing_status, ""), "role": who[1],
                "limits": {"rpm": limits.rpm, "tpm": limits.tpm}, "month": month,
                "budget_usd": _usd(account.budget_micros),
                "spend_usd": _usd(account_spend(ctx.store, ctx.platform.config, account.id, month))}
    return await run_in_threadpool(read)


@router.put("/budget")
async def account_budget(account_id: int, form: BudgetForm, request: Request, who=Depends(manager)
                         ) -> dict[str, Any]:
    amount = budget_micros(form.budget_usd)
    account = await run_in_threadpool(account_row, request, account_id)
    await run_in_threadpool(set_budget, console(request).store, account.name, amount)
    return {"budget_usd": _usd(amount)}


def _key_view(request: Request, key: KeyInfo, used: datetime | None) -> dict[str, Any]:
    ctx = console(request)
    spend = None if key.budget_micros is None \
        else key_spend(ctx.store, ctx.platform.config, key.id, this_month())
    status = ("revoked" if key.revoked_at else "expired" if key.expired else "active")
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "status": status,
            "created_at": _iso(key.created_at), "expires_at": _iso(key.expires_at),
            "revoked_at": _iso(key.revoked_at), "last_used_at": _iso(used), "rpm": key.rpm, "tpm": key.tpm,
            "budget_usd": _usd(key.budget_micros), "spend_usd": _usd(spend)}


@router.get("/keys")
async def keys(account_id: int, request: Request, who=Depends(membership)) -> dict[str, Any]:
    def read() -> list[dict[str, Any]]:
        account = account_row(request, account_id)
        found = list_keys(console(request).store, account.name)
        used = explorer.last_used(console(request).store, [k.id for k in found])
        return [_key_view(request, k, used.get(k.id)) for k in found]
    return {"data": await run_in_threadpool(read)}


@router.post("/keys", status_code=201)
async def new_key(account_id: int, form: KeyForm, request: Request, who=Depends(manager)) -> dict[str, Any]:
    """The CLI's rules (keys.create_key), and limits no higher than the account's tier allows."""
    ctx = console(request)
    account = await run_in_threadpool(account_row, request, account_id)
    tier = ctx.platform.config.limits(account.tier)
    for name, value, cap in (("rpm", form.rpm, tier.rpm), ("tpm", form.tpm, tier.tpm)):
        if value is not None and value > cap:
            raise APIError(400, f"{name} {value} is more than the {account.tier} tier allows ({cap})",
                           param=name)
    budget = budget_micros(form.budget_usd)
    expires = datetime.now(UTC) + timedelta(days=form.expires_in_days) if form.expires_in_days else None

    def make() -> tuple[KeyInfo, str]:
        info, secret = create_key(ctx.store, form.name, account.name, rpm=form.rpm, tpm=form.tpm,
                                  expires_at=expires)
        if budget is not None:
            set_key_budget(ctx.store, info.id, budget)
            info.budget_micros = budget
        return info, secret
    try:
        info, secret = await run_in_threadpool(make)
    except ValueError as exc:
        raise APIError(400, str(exc)) from exc
    return {"key": _key_view(request, info, None), "secret": secret,
            "message": "Copy this key now: it is not shown again."}


@router.post("/keys/{key_id}/revoke")
async def revoke(account_id: int, key_id: int, request: Request, who=Depends(manager)) -> dict[str, Any]:
    key = await run_in_threadpool(_key_of, request, account_id, key_id)
    await run_in_threadpool(revoke_key, console(request).store, key.id)
    return {"id": key.id, "status": "revoked"}


@router.put("/keys/{key_id}/budget")
async def key_budget(account_id: int, key_id: int, form: BudgetForm, request: Request, who=Depends(manager)
                     ) -> dict[str, Any]:
    key = await run_in_threadpool(_key_of, request, account_id, key_id)
    amount = budget_micros(form.budget_usd)
    await run_in_threadpool(set_key_budget, console(request).store, key.id, amount)
    return {"id": key.id, "budget_usd": _usd(amount)}
