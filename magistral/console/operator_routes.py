"""The operator console (/console/api/operator/…, operators only) and the billing hook
(/console/hooks/billing, an admin API key): every account with tier, status and month-to-date
spend; activate, suspend, change tier — each through `operator.py`, so each is audited."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_admin
from magistral.api.errors import APIError
from magistral.console import audit, operator
from magistral.console.web import Signed, check_csrf, console
from magistral.console.web import operator as operator_only
from magistral.platform.keys import KeyInfo
from magistral.platform.store import Account

router = APIRouter(prefix="/console/api/operator", dependencies=[Depends(check_csrf)],
                   include_in_schema=False)
hooks = APIRouter(prefix="/console/hooks", include_in_schema=False)


class StatusForm(BaseModel):
    status: Literal["active", "suspended", "pending"]


class TierForm(BaseModel):
    tier: str = Field(max_length=50)


class BillingEvent(BaseModel):
    account: str = Field(max_length=200)
    status: Literal["active", "suspended"]
    reference: str = Field(default="", max_length=200)  # the payment's id, kept in the audit log


def _name(request: Request, account_id: int) -> str:
    with console(request).store.session() as s:
        row = s.get(Account, account_id)
    if row is None:
        raise APIError(404, "Not found: no such account", code="not_found")
    return row.name


@router.get("/accounts")
async def accounts(request: Request, _: Signed = Depends(operator_only)) -> dict[str, Any]:
    ctx = console(request)
    return {"data": await run_in_threadpool(operator.overview, ctx.store, ctx.platform.config),
            "tiers": sorted(ctx.platform.config.account_tiers)}


@router.post("/accounts/{account_id}/status")
async def status(account_id: int, form: StatusForm, request: Request, who: Signed = Depends(operator_only)
                 ) -> dict[str, Any]:
    name = await run_in_threadpool(_name, request, account_id)
    await run_in_threadpool(operator.change_status, console(request).store, name, form.status,
                            f"user:{who.person.email}")
    return {"id": account_id, "status": form.status}


@router.post("/accounts/{account_id}/tier")
async def tier(account_id: int, form: TierForm, request: Request, who: Signed = Depends(operator_only)
               ) -> dict[str, Any]:
    ctx = console(request)
    name = await run_in_threadpool(_name, request, account_id)
    try:
        await run_in_threadpool(operator.change_tier, ctx.store, ctx.platform.config, name, form.tier,
                                f"user:{who.person.email}")
    except ValueError as exc:
        raise APIError(400, str(exc), param="tier") from exc
    return {"id": account_id, "tier": form.tier}


@router.get("/audit")
async def audit_log(request: Request, _: Signed = Depends(operator_only)) -> dict[str, Any]:
    return {"data": await run_in_threadpool(audit.entries, console(request).store)}


@hooks.post("/billing")
async def billing(event: BillingEvent, request: Request, key: KeyInfo = Depends(require_admin)
                  ) -> dict[str, Any]:
    """For a payment integration: activate an account once paid, suspend it when payment fails."""
    try:
        await run_in_threadpool(operator.change_status, console(request).store, event.account, event.status,
                                f"billing-hook:{key.name}", reference=event.reference)
    except operator.NoSuchAccount as exc:
        raise APIError(404, f"no account named {event.account!r}", code="not_found") from exc
    return {"account": event.account, "status": event.status}
