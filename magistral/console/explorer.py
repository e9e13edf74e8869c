"""The usage explorer: an account's usage over a date range grouped by day, hour, key or model,
and as CSV. Days, keys and models come from the daily aggregates (`platform/reports.py`); hours
from the usage rows themselves, so hourly ranges are capped. Costs are at list price; volume
discounts are the month's invoice's (`platform/billing.py`). Thinking tokens (reasoning traces,
[THINK]…[/THINK] markers included) are output tokens, billed so: `thinking_tokens` is the part of
`completion_tokens` they make up, not an addition to it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select

from magistral.platform.billing import list_cost
from magistral.platform.config import PlatformConfig
from magistral.platform.reports import usage_report
from magistral.platform.store import ApiKey, Store, UsageRecord

Group = Literal["day", "hour", "key", "model"]
MAX_DAYS = 366
MAX_HOURLY_DAYS = 31
COLUMNS = ["group", "requests", "prompt_tokens", "completion_tokens", "thinking_tokens", "total_tokens",
           "cost_usd"]


def explore(store: Store, config: PlatformConfig, account_id: int, first: date, last: date,
            group_by: Group) -> list[dict[str, Any]]:
    """One row per group, sorted; each has `group` (its label) and the report's numbers."""
    if last < first:
        raise ValueError("the end is before the start")
    if (last - first).days >= (MAX_HOURLY_DAYS if group_by == "hour" else MAX_DAYS):
        raise ValueError(f"at most {MAX_HOURLY_DAYS if group_by == 'hour' else MAX_DAYS} days at a time"
                         + (" by hour" if group_by == "hour" else ""))
    if group_by == "hour":
        return _hourly(store, config, account_id, first, last)
    rows = usage_report(store, config, account_id, first, last, group_by)
    for row in rows:
        label = row[group_by]
        row["group"] = f"{row.get('key_name') or 'key'} (#{label})" if group_by == "key" else str(label)
    return rows


def _hourly(store: Store, config: PlatformConfig, account_id: int, first: date, last: date
            ) -> list[dict[str, Any]]:
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    with store.session() as s:
        rows = s.execute(select(UsageRecord.created_at, UsageRecord.model, UsageRecord.prompt_tokens,
                                UsageRecord.completion_tokens, UsageRecord.thinking_tokens)
                         .where(UsageRecord.account_id == account_id, UsageRecord.created_at >= start,
                                UsageRecord.created_at < end)).all()
    groups: dict[str, dict[str, Any]] = {}
    for created, model, prompt, completion, thinking in rows:
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        label = created.astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")
        entry = groups.setdefault(label, {"hour": label, "group": label, "requests": 0, "prompt_tokens": 0,
                                          "completion_tokens": 0, "thinking_tokens": 0, "total_tokens": 0,
                                          "cost": Decimal(0)})
        entry["requests"] += 1
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion
        entry["thinking_tokens"] += thinking
        entry["total_tokens"] += prompt + completion
        entry["cost"] += list_cost(config, model, prompt, completion)
    for entry in groups.values():
        entry["cost_usd"] = str(entry.pop("cost"))
    return [groups[label] for label in sorted(groups)]


def as_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # a label starting with = + - @ would be a formula in a spreadsheet (key names are the user's)
        label = str(row["group"])
        writer.writerow({**row, "group": "'" + label if label[:1] in "=+-@\t\r" else label})
    return out.getvalue()


def last_used(store: Store, key_ids: list[int]) -> dict[int, datetime]:
    """When each key last made a request (its newest usage row)."""
    if not key_ids:
        return {}
    with store.session() as s:
        rows = s.execute(select(UsageRecord.key_id, func.max(UsageRecord.created_at))
                         .where(UsageRecord.key_id.in_(key_ids)).group_by(UsageRecord.key_id)).all()
    return {k: (t if t.tzinfo else t.replace(tzinfo=UTC)) for k, t in rows}


def key_ids_of(store: Store, account_id: int) -> list[int]:
    with store.session() as s:
        return list(s.scalars(select(ApiKey.id).where(ApiKey.account_id == account_id)))
