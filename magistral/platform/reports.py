"""Usage reports of one account, read from the daily aggregates (so they stay fast with millions
of usage rows): tokens, requests and list-price cost per day, key or model. `thinking_tokens` are
the part of `completion_tokens` spent in reasoning traces (billed as output, like the rest)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from sqlalchemy import func, select

from magistral.platform.billing import list_cost
from magistral.platform.config import PlatformConfig
from magistral.platform.store import ApiKey, Store, UsageDaily

GroupBy = Literal["day", "key", "model"]


def usage_report(store: Store, config: PlatformConfig, account_id: int, first: date, last: date,
                 group_by: GroupBy) -> list[dict[str, Any]]:
    """One entry per group from `first` to `last` (inclusive, UTC days), sorted by the group;
    `cost_usd` at list price (volume discounts belong to the month's invoice)."""
    daily = UsageDaily
    column = {"day": daily.day, "key": daily.key_id, "model": daily.model}[group_by]
    query = (select(column, daily.model, func.sum(daily.requests), func.sum(daily.prompt_tokens),
                    func.sum(daily.completion_tokens), func.sum(daily.thinking_tokens))
             .where(daily.account_id == account_id, daily.day >= first, daily.day <= last)
             .group_by(column, daily.model))
    with store.session() as s:
        rows = s.execute(query).all()
        names = dict(s.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.account_id == account_id)).all())
    groups: dict[Any, dict[str, Any]] = {}
    for group, model, requests, prompt, completion, thinking in rows:
        label = group.isoformat() if group_by == "day" else group
        entry = groups.setdefault(label, {group_by: label, "requests": 0, "prompt_tokens": 0,
                                          "completion_tokens": 0, "thinking_tokens": 0, "total_tokens": 0,
                                          "cost": 0})
        if group_by == "key":
            entry["key_name"] = names.get(group, "")
        entry["requests"] += int(requests)
        entry["prompt_tokens"] += int(prompt)
        entry["completion_tokens"] += int(completion)
        entry["thinking_tokens"] += int(thinking)
        entry["total_tokens"] += int(prompt) + int(completion)
        entry["cost"] += list_cost(config, model, int(prompt), int(completion))
    for entry in groups.values():
        entry["cost_usd"] = str(entry.pop("cost"))
    return sorted(groups.values(), key=lambda e: str(e[group_by]))
