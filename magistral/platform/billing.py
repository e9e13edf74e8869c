"""Monthly invoices with graduated volume tiers, in exact decimal arithmetic.

Tokens are counted through the calendar month in a fixed order: day by day, within a day model
by model (by name), input before output. Each token is priced at its model's list price and
discounted by the tier that the account's running monthly count is in when that token is
counted, so one token past 100M is the only one discounted. Thinking tokens are output tokens.
Amounts are Decimal dollars; each invoice line is rounded (half up) to the micro-dollar once,
and the total is the sum of the rounded lines, so the API, the CLI and the dashboard agree.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from magistral.platform.config import PlatformConfig, VolumeTier
from magistral.platform.store import Store, UsageDaily

MICRO = Decimal("0.000001")
_EXACT = decimal.Context(prec=60)  # no rounding anywhere before the final micro-dollar


@dataclass
class InvoiceLine:
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    list_amount: Decimal = Decimal(0)  # before volume discounts
    discount: Decimal = Decimal(0)

    @property
    def amount(self) -> Decimal:
        return (self.list_amount - self.discount).quantize(MICRO, rounding=decimal.ROUND_HALF_UP)


@dataclass
class Invoice:
    account: str
    month: str  # YYYY-MM
    lines: list[InvoiceLine] = field(default_factory=list)
    tokens_by_tier: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return sum(line.prompt_tokens + line.completion_tokens for line in self.lines)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0)).quantize(MICRO)

    @property
    def total_micros(self) -> int:
        return int(self.total / MICRO)

    def as_dict(self) -> dict:
        return {"object": "invoice", "account": self.account, "month": self.month,
                "total_tokens": self.total_tokens, "total_usd": str(self.total),
                "total_micro_usd": self.total_micros, "tokens_by_tier": self.tokens_by_tier,
                "lines": [{"model": line.model, "prompt_tokens": line.prompt_tokens,
                           "completion_tokens": line.completion_tokens,
                           "list_usd": str(line.list_amount.quantize(MICRO, rounding=decimal.ROUND_HALF_UP)),
                           "discount_usd": str(line.discount.quantize(MICRO, rounding=decimal.ROUND_HALF_UP)),
                           "amount_usd": str(line.amount)} for line in self.lines]}


def _tier_label(tier: VolumeTier) -> str:
    return f"from {tier.from_tokens:,} tokens: {float(tier.discount * 100):g}% off"  # a label only


def compute_invoice(account: str, month: str, usage: list[tuple[date, str, int, int]],
                    config: PlatformConfig) -> Invoice:
    """usage: (day, model, prompt tokens, completion tokens) rows of one account and month."""
    invoice = Invoice(account=account, month=month)
    lines: dict[str, InvoiceLine] = {}
    tiers = config.volume_tiers
    counted = 0
    with decimal.localcontext(_EXACT):
        for _day, model, prompt, completion in sorted(usage, key=lambda row: (row[0], row[1])):
            line = lines.setdefault(model, InvoiceLine(model))
            line.prompt_tokens += prompt
            line.completion_tokens += completion
            price = config.price(model)
            for tokens, per_million in ((prompt, price.input), (completion, price.output)):
                per_token = per_million / Decimal(1_000_000)
                while tokens > 0:
                    index = max(i for i, t in enumerate(tiers) if t.from_tokens <= counted)
                    end = tiers[index + 1].from_tokens if index + 1 < len(tiers) else None
                    take = tokens if end is None else min(tokens, end - counted)
                    cost = per_token * take
                    line.list_amount += cost
                    line.discount += cost * tiers[index].discount
                    label = _tier_label(tiers[index])
                    invoice.tokens_by_tier[label] = invoice.tokens_by_tier.get(label, 0) + take
                    counted += take
                    tokens -= take
    invoice.lines = sorted(lines.values(), key=lambda line: line.model)
    return invoice


def month_bounds(month: str) -> tuple[date, date]:
    """'2026-11' → (2026-11-01, 2026-12-01): the first day and the day after the last."""
    year, number = (int(part) for part in month.split("-"))
    start = date(year, number, 1)
    return start, date(year + number // 12, number % 12 + 1, 1)


def invoice_for(store: Store, config: PlatformConfig, account_id: int, account: str, month: str) -> Invoice:
    start, end = month_bounds(month)
    with store.session() as s:
        rows = s.execute(select(UsageDaily.day, UsageDaily.model, UsageDaily.prompt_tokens,
                                UsageDaily.completion_tokens)
                         .where(UsageDaily.account_id == account_id, UsageDaily.day >= start,
                                UsageDaily.day < end)).all()
    return compute_invoice(account, month, [tuple(r) for r in rows], config)


def list_cost(config: PlatformConfig, model: str, prompt: int, completion: int) -> Decimal:
    """A usage's cost at list price (no volume discount), rounded to the micro-dollar."""
    price = config.price(model)
    with decimal.localcontext(_EXACT):
        cost = (price.input * prompt + price.output * completion) / Decimal(1_000_000)
    return cost.quantize(MICRO, rounding=decimal.ROUND_HALF_UP)
