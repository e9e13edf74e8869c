"""The calling account's usage, invoice and limits: GET /v1/usage, /v1/usage/invoice, /v1/account.
They read the daily aggregates, so they stay fast with millions of usage rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.platform.billing import invoice_for
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo
from magistral.platform.reports import usage_report

router = APIRouter()


def _day(value: str | None, default: date, name: str) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise APIError(400, f"Invalid {name}: {value!r} (expected YYYY-MM-DD)", param=name) from exc


@router.get("/v1/usage")
async def usage(request: Request, start: str | None = None, end: str | None = None,
                group_by: Literal["day", "key", "model"] = Query("day"),
                key: KeyInfo = Depends(require_key)) -> dict[str, Any]:
    """Tokens and list-price cost of the calling account from start to end (inclusive, UTC days;
    default: this month so far), grouped by day, key or model."""
    platform: Platform = request.app.state.platform
    today = datetime.now(UTC).date()
    first, last = _day(start, today.replace(day=1), "start"), _day(end, today, "end")
    if last < first:
        raise APIError(400, "end is before start", param="end")
    data = await run_in_threadpool(usage_report, platform.store, platform.config, key.account_id, first,
                                   last, group_by)
    return {"object": "list", "account": key.account, "start": first.isoformat(), "end": last.isoformat(),
            "group_by": group_by, "data": data}


@router.get("/v1/usage/invoice")
async def invoice(request: Request, month: str | None = None, key: KeyInfo = Depends(require_key)
                  ) -> dict[str, Any]:
    """The calling account's invoice for a calendar month (default: this one, so far)."""
    platform: Platform = request.app.state.platform
    month = month or datetime.now(UTC).strftime("%Y-%m")
    try:
        first = date.fromisoformat(month + "-01")
    except ValueError as exc:
        raise APIError(400, f"Invalid month: {month!r} (expected YYYY-MM)", param="month") from exc
    if not 2000 <= first.year <= 9998:
        raise APIError(400, f"Invalid month: {month!r} (years 2000 to 9998)", param="month")
    result = await run_in_threadpool(invoice_for, platform.store, platform.config, key.account_id,
                                     key.account, month)
    return result.as_dict()


@router.get("/v1/account")
async def account(request: Request, key: KeyInfo = Depends(require_key)) -> dict[str, Any]:
    """The calling key, its account, its limits and what remains of them this minute."""
    platform: Platform = request.app.state.platform
    remaining = await run_in_threadpool(platform.remaining, key)
    return {"object": "account", "account": key.account, "tier": key.tier,
            "billing_status": key.account_status,
            "key": {"id": key.id, "name": key.name, "prefix": key.prefix,
                    "expires_at": key.expires_at.isoformat() if key.expires_at else None},
            "limits": {"requests_per_minute": remaining.limit_requests,
                       "tokens_per_minute": remaining.limit_tokens},
            "remaining": {"requests_this_minute": max(0, remaining.remaining_requests),
                          "tokens_this_minute": max(0, remaining.remaining_tokens)},
            "prices_per_million_tokens": {model: {"input": str(p.input), "output": str(p.output)}
                                          for model, p in platform.config.prices.items()}}
