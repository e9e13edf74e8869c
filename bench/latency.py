"""Latency through the HTTP API: time to first token (32- and 500-token prompts) and decode
tokens/s over 128 tokens, median of N runs after a warm-up.

    python bench/latency.py                        # starts its own server on the default model
    python bench/latency.py --base-url http://127.0.0.1:8000 --api-key mg-...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stream_once(client: httpx.Client, model: str, content: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
            "max_tokens": max_tokens, "temperature": 0}
    start = time.perf_counter()
    first = last = None
    usage = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            delta = payload["choices"][0]["delta"]
            if delta.get("content") and first is None:
                first = time.perf_counter()
            last = time.perf_counter()
            usage = payload.get("usage", usage)
    return {"ttft_ms": ((first or last) - start) * 1000, "total_s": last - start,
            "decode_s": last - (first or last), **(usage or {})}


def prompt_with_tokens(client: httpx.Client, model: str, target: int, salt: int) -> str:
    """User text whose whole chat prompt is `target` tokens. Calibrated (with max_tokens=0) on a
    different salt of the same digit count, so the measured prompt is not already in the
    server's prefix cache."""
    def text(words: int, s: int) -> str:
        return f"{s} " + " ".join(["hello"] * words)

    words = max(1, target - 30)
    for _ in range(5):
        body = {"model": model, "messages": [{"role": "user", "content": text(words, salt + 1)}],
                "max_tokens": 0}
        got = client.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens"]
        if got == target:
            break
        words += target - got
    return text(words, salt)


def run(base_url: str, api_key: str, model: str, runs: int) -> dict:
    client = httpx.Client(base_url=base_url, timeout=600,
                          headers={"Authorization": f"Bearer {api_key}"})
    essay = "Write a long, detailed essay about the history of the Roman Empire."
    stream_once(client, model, essay, 16)  # warm-up
    results: dict[str, list[float]] = {"ttft_32": [], "ttft_500": [], "decode_tps": []}
    for i in range(runs):
        for size in (32, 500):
            text = prompt_with_tokens(client, model, size, salt=100000 * size + 10 * i)
            results[f"ttft_{size}"].append(stream_once(client, model, text, 1)["ttft_ms"])
        r = stream_once(client, model, f"{essay} ({i})", 128)
        results["decode_tps"].append((r["completion_tokens"] - 1) / r["decode_s"])
    summary = {k: statistics.median(v) for k, v in results.items()}
    summary["runs"] = runs
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    parser.add_argument("--model", default="magistral-medium-latest")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = None
    if args.base_url is None:
        from tests.conftest import start_server
        server = start_server(Path(tempfile.mkdtemp(prefix="magistral-bench-")))
        args.base_url, args.api_key = server.base_url, server.key
    try:
        summary = run(args.base_url, args.api_key, args.model, args.runs)
    finally:
        if server is not None:
            server.process.terminate()
    print(f"median of {summary['runs']} runs via {args.base_url}")
    print(f"  TTFT, 32-token prompt : {summary['ttft_32']:8.1f} ms")
    print(f"  TTFT, 500-token prompt: {summary['ttft_500']:8.1f} ms")
    print(f"  decode (128 tokens)   : {summary['decode_tps']:8.1f} tokens/s")


if __name__ == "__main__":
    main()
