"""The platform's price list, volume tiers and default limits. Defaults are the seed's: $3.50 per
million input tokens and $10.00 per million output tokens for every model, volume discounts past
100M tokens in a calendar month. `magistral serve --platform-config FILE` (JSON) overrides them:

    {"prices": {"*": {"input": "3.50", "output": "10.00"}, "my-model": {"input": "1", "output": "2"},
                "all-minilm-l6-v2": {"input": "0.10", "output": "0"}},
     "volume_tiers": [{"from_tokens": 0, "discount": "0"}, {"from_tokens": 100000000, "discount": "0.10"}],
     "account_tiers": {"standard": {"rpm": 60, "tpm": 500000}},
     "max_reserve_tokens": 4096}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


@dataclass(frozen=True)
class Price:
    input: Decimal  # dollars per million tokens
    output: Decimal


@dataclass(frozen=True)
class VolumeTier:
    from_tokens: int  # the tier starts at this many tokens of the account in the month
    discount: Decimal  # fraction off, e.g. 0.10


@dataclass(frozen=True)
class Limits:
    rpm: int  # requests per minute
    tpm: int  # tokens (prompt + completion) per minute


def _default_prices() -> dict[str, Price]:
    # embeddings are priced apart, as mistral-embed is: $0.10 per million input tokens
    return {"*": Price(Decimal("3.50"), Decimal("10.00")),
            "all-minilm-l6-v2": Price(Decimal("0.10"), Decimal("0"))}


def _default_tiers() -> list[VolumeTier]:
    return [VolumeTier(0, Decimal("0")), VolumeTier(100_000_000, Decimal("0.10")),
            VolumeTier(1_000_000_000, Decimal("0.20"))]


def _default_account_tiers() -> dict[str, Limits]:
    return {"standard": Limits(rpm=60, tpm=500_000), "scale": Limits(rpm=600, tpm=5_000_000),
            "enterprise": Limits(rpm=6_000, tpm=50_000_000)}


@dataclass
class PlatformConfig:
    prices: dict[str, Price] = field(default_factory=_default_prices)
    volume_tiers: list[VolumeTier] = field(default_factory=_default_tiers)
    account_tiers: dict[str, Limits] = field(default_factory=_default_account_tiers)
    # tokens reserved for the completion of a request without max_tokens
    max_reserve_tokens: int = 4096

    def price(self, model: str) -> Price:
        return self.prices.get(model) or self.prices["*"]

    def limits(self, tier: str) -> Limits:
        return self.account_tiers.get(tier) or self.account_tiers["standard"]

    @classmethod
    def load(cls, path: str | Path | None) -> PlatformConfig:
        config = cls()
        if path is None:
            return config
        raw = json.loads(Path(path).read_text())
        if "prices" in raw:
            config.prices = {**config.prices, **{m: Price(Decimal(str(p["input"])), Decimal(str(p["output"])))
                                                 for m, p in raw["prices"].items()}}
        if "volume_tiers" in raw:
            config.volume_tiers = sorted((VolumeTier(int(t["from_tokens"]), Decimal(str(t["discount"])))
                                          for t in raw["volume_tiers"]), key=lambda t: t.from_tokens)
            if not config.volume_tiers or config.volume_tiers[0].from_tokens != 0:
                config.volume_tiers.insert(0, VolumeTier(0, Decimal("0")))
        if "account_tiers" in raw:
            config.account_tiers = {**config.account_tiers, **{
                name: Limits(int(t["rpm"]), int(t["tpm"])) for name, t in raw["account_tiers"].items()}}
        config.max_reserve_tokens = int(raw.get("max_reserve_tokens", config.max_reserve_tokens))
        return config
