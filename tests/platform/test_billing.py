"""Invoice arithmetic: graduated volume tiers at their edges, thinking tokens as output, months."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from magistral.platform.billing import compute_invoice, list_cost, month_bounds
from magistral.platform.config import PlatformConfig, Price

CONFIG = PlatformConfig()  # the seed's prices: $3.50 / $10.00 per million; 10% off past 100M
M = 1_000_000


def test_list_prices_are_the_seeds() -> None:
    invoice = compute_invoice("a", "2026-11", [(date(2026, 11, 3), "m", M, M)], CONFIG)
    assert invoice.total == Decimal("13.50") and invoice.total_micros == 13_500_000


def test_exactly_100m_tokens_get_no_discount_and_one_more_does() -> None:
    at_edge = compute_invoice("a", "2026-11", [(date(2026, 11, 1), "m", 100 * M, 0)], CONFIG)
    assert at_edge.total == Decimal("350.000000")  # 100M input tokens at $3.50 per million
    past = compute_invoice("a", "2026-11", [(date(2026, 11, 1), "m", 100 * M, 1)], CONFIG)
    # the one output token past 100M costs $0.00001 less 10%: $0.000009
    assert past.total == Decimal("350.000009") and past.total_micros == 350_000_009
    assert past.tokens_by_tier == {"from 0 tokens: 0% off": 100 * M, "from 100,000,000 tokens: 10% off": 1}


def test_tokens_are_counted_in_day_order_across_the_edge() -> None:
    usage = [(date(2026, 11, 2), "m", 0, 10 * M),  # day 2: output, all past the edge
             (date(2026, 11, 1), "m", 99 * M, 0)]  # day 1 counts first
    invoice = compute_invoice("a", "2026-11", usage, CONFIG)
    # day 1: 99M × 3.50/M = 346.50; day 2: 1M output at list ($10) + 9M at 10% off ($81)
    assert invoice.total == Decimal("346.50") + Decimal("10") + Decimal("81")


def test_thinking_tokens_bill_as_output() -> None:
    # a response of 300 thinking + 100 answer tokens is 400 completion tokens
    invoice = compute_invoice("a", "2026-11", [(date(2026, 11, 5), "m", 1000, 300 + 100)], CONFIG)
    assert invoice.total == Decimal("0.0035") + Decimal("0.004")


def test_month_bounds_and_a_month_boundary() -> None:
    assert month_bounds("2026-11") == (date(2026, 11, 1), date(2026, 12, 1))
    assert month_bounds("2026-12") == (date(2026, 12, 1), date(2027, 1, 1))
    # 60M in November and 60M in December: neither month reaches the 100M tier
    for month, day in (("2026-11", date(2026, 11, 30)), ("2026-12", date(2026, 12, 1))):
        invoice = compute_invoice("a", month, [(day, "m", 60 * M, 0)], CONFIG)
        assert invoice.total == Decimal("210") and not invoice.lines[0].discount


def test_per_model_prices_and_micro_dollar_rounding() -> None:
    config = PlatformConfig(prices={"*": Price(Decimal("3.50"), Decimal("10.00")),
                                    "cheap": Price(Decimal("0.333333"), Decimal("1"))})
    invoice = compute_invoice("a", "2026-11", [(date(2026, 11, 1), "cheap", 3, 0),
                                               (date(2026, 11, 1), "m", 1, 1)], config)
    lines = {line.model: line.amount for line in invoice.lines}
    assert lines == {"cheap": Decimal("0.000001"), "m": Decimal("0.000014")}  # 0.000000999999 rounds up
    assert invoice.total == Decimal("0.000015")
    assert list_cost(config, "m", 1, 1) == Decimal("0.000014")
