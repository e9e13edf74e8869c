"""The usage explorer's routes: usage of an account over a range, grouped by day, hour, key or
model (JSON and CSV), and its invoice for a month."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.console import explorer
from magistral.console.account_routes import account_row
from magistral.console.web import check_csrf, console, membership
from magistral.platform.billing import invoice_for
from magistral.platform.budgets import this_month

router = APIRouter(prefix="/console/api/accounts/{account_id}", dependencies=[Depends(check_csrf)],
                   include_in_schema=False)


def _range(start: str | None, end: str | None) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    try:
        first = date.fromisoformat(start) if start else today.replace(day=1)
        last = date.fromisoformat(end) if end else today
    except ValueError as exc:
        raise APIError(400, "dates are YYYY-MM-DD", param="start") from exc
    return first, last


async def _explore(request: Request, account_id: int, start: str | None, end: str | None,
                   group_by: str) -> tuple[date, date, list[dict[str, Any]]]:
    first, last = _range(start, end)
    ctx = console(request)
    try:
        rows = await run_in_threadpool(explorer.explore, ctx.store, ctx.platform.config, account_id, first,
                                       last, group_by)
    except ValueError as exc:
        raise APIError(400, str(exc)) from exc
    return first, last, rows


GroupBy = Literal["day", "hour", "key", "model"]


@router.get("/usage")
async def usage(account_id: int, request: Request, start: str | None = None, end: str | None = None,
                group_by: GroupBy = "day", who=Depends(membership)) -> dict[str, Any]:
    first, last, rows = await _explore(request, account_id, start, end, group_by)
    totals = {name: sum(r[name] for r in rows) for name in ("requests", "prompt_tokens", "completion_tokens",
                                                            "thinking_tokens", "total_tokens")}
    totals["cost_usd"] = str(sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0)))
    return {"start": first.isoformat(), "end": last.isoformat(), "group_by": group_by, "data": rows,
            "totals": totals}


@router.get("/usage.csv")
async def usage_csv(account_id: int, request: Request, start: str | None = None, end: str | None = None,
                    group_by: GroupBy = "day", who=Depends(membership)) -> Response:
    first, last, rows = await _explore(request, account_id, start, end, group_by)
    name = f"usage-{account_id}-{first}-{last}-{group_by}.csv"
    return Response(explorer.as_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/invoice")
async def invoice(account_id: int, request: Request, month: str | None = None, who=Depends(membership)
                  ) -> dict[str, Any]:
    ctx = console(request)
    month = month or this_month()
    try:
        first = date.fromisoformat(month + "-01")
    except ValueError as exc:
        raise APIError(400, "month is YYYY-MM", param="month") from exc
    if not 2000 <= first.year <= 9998:
        raise APIError(400, "month is YYYY-MM, years 2000 to 9998", param="month")
    account = await run_in_threadpool(account_row, request, account_id)
    result = await run_in_threadpool(invoice_for, ctx.store, ctx.platform.config, account.id, account.name,
                                     month)
    return result.as_dict()
