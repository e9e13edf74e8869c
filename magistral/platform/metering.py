"""Usage rows: one per request that reached the model, written before its response ends."""

from __future__ import annotations

from dataclasses import dataclass

from magistral.platform.store import Store, UsageRecord


@dataclass
class Usage:
    request_id: str
    key_id: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    status: str
    latency_ms: int


def record_usage(store: Store, usage: Usage) -> None:
    with store.session() as s, s.begin():
        s.add(UsageRecord(**usage.__dict__))
