"""Latency as a user sees it: time to first token and tokens/s of streamed requests at several
concurrency levels, for a text prompt and (optionally) an image prompt; p50/p95/p99. Every
request starts with its own number, so no server answers it from a prompt-prefix cache."""

from __future__ import annotations

import base64
import mimetypes
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from magistral.client import Client

TEXT_PROMPT = "Explain in a few sentences why the sky is blue."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def image_message(path: Path) -> list[dict[str, Any]]:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "text", "text": "Describe this image briefly."},
                                         {"type": "image_url", "image_url": f"data:{mime};base64,{data}"}]}]


def _unique(messages: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    first = dict(messages[0])
    content = first["content"]
    if isinstance(content, str):
        first["content"] = f"Request {n}. {content}"
    else:
        first["content"] = [{"type": "text", "text": f"Request {n}."}, *content]
    return [first, *messages[1:]]


def _one(client: Client, model: str, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    tokens = 0
    for event in client.chat.stream(model=model, messages=messages, max_tokens=max_tokens, temperature=0):
        if event.kind in ("text", "thinking") and first is None:
            first = time.perf_counter()
        if event.kind == "end" and event.usage:
            tokens = event.usage.get("completion_tokens", 0)
    end = time.perf_counter()
    first = first or end
    return {"ttft_ms": (first - start) * 1000, "tokens": tokens,
            "tps": (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0}


def measure(base_url: str | None, api_key: str | None, model: str, messages: list[dict[str, Any]],
            levels: tuple[int, ...] = (1, 4, 16), rounds: int = 2, max_tokens: int = 64) -> dict[str, Any]:
    """Each level runs `level` concurrent clients, each sending `rounds` requests in a row."""
    out: dict[str, Any] = {}
    counter = iter(range(10**9))
    for level in levels:
        def worker(_: int) -> list[dict[str, float]]:
            with Client(base_url, api_key) as client:
                return [_one(client, model, _unique(messages, next(counter)), max_tokens)
                        for _ in range(rounds)]
        start = time.perf_counter()
        with ThreadPoolExecutor(level) as pool:
            samples = [s for batch in pool.map(worker, range(level)) for s in batch]
        wall = time.perf_counter() - start
        ttft = [s["ttft_ms"] for s in samples]
        tps = [s["tps"] for s in samples if s["tps"] > 0]
        out[str(level)] = {
            "requests": len(samples), "ttft_p50_ms": statistics.median(ttft),
            "ttft_p95_ms": percentile(ttft, 0.95), "ttft_p99_ms": percentile(ttft, 0.99),
            "tokens_per_s_p50": statistics.median(tps) if tps else 0.0,
            "aggregate_tokens_per_s": sum(s["tokens"] for s in samples) / wall,
            "ttft_samples_ms": ttft}
    return out
