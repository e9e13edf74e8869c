"""Prometheus metrics of one server process (each replica is scraped on its own /metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("magistral_requests", "Chat completion requests by model and outcome",
                                ["model", "status"], registry=self.registry)
        self.tokens = Counter("magistral_tokens", "Tokens processed, by model and kind (prompt, completion)",
                              ["model", "kind"], registry=self.registry)
        self.latency = Histogram("magistral_request_latency_seconds", "Request latency, end to end",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("magistral_time_to_first_token_seconds", "Time to the first streamed token",
                              ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.rate_limited = Counter("magistral_rate_limit_rejections", "Requests refused with 429, by limit",
                                    ["limit"], registry=self.registry)

        self.prefix_cache = Gauge("magistral_prefix_cache_bytes",
                                  "Keys and values kept for prompt reuse, by model (bounded by a budget)",
                                  ["model"], registry=self.registry)

    def watch_models(self, models: Iterable[Any]) -> None:
        """Read each native engine's prefix-cache size at every scrape."""
        for model in models:
            cache = getattr(model.engine, "prefix_cache", None)
            if cache is not None:
                self.prefix_cache.labels(model.id).set_function(lambda cache=cache: cache.used)

    def observe_request(self, model: str, status: str, prompt: int, completion: int, seconds: float) -> None:
        self.requests.labels(model, status).inc()
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)
        self.latency.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
