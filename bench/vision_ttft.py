"""Time to first token with one 512×512 chart image through the HTTP API (the seed's
multimodal claim: under 500 ms), on magistral-mini; median of N runs after a warm-up, each
image a new chart so that no prefix-cache hit helps.

    python bench/vision_ttft.py [--runs 10] [--model PATH]   # starts its own server
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magistral.train.tasks.charts import example  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402


def chart_url(seed: int) -> tuple[str, str]:
    ex = example(random.Random(seed))
    buffer = io.BytesIO()
    ex.image.resize((512, 512)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), ex.question


def first_token_ms(client: httpx.Client, model: str, seed: int) -> tuple[float, int]:
    url, question = chart_url(seed)
    body = {"model": model, "stream": True, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": url},
                                                      {"type": "text", "text": question}]}]}
    start = time.perf_counter()
    first, usage = None, {}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if first is None and payload["choices"] and payload["choices"][0]["delta"].get("content"):
                first = time.perf_counter()  # a thinking chunk or text: the first token either way
            usage = payload.get("usage") or usage
    return ((first or time.perf_counter()) - start) * 1000, usage.get("prompt_tokens", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default=None, help="a magistral-mini folder (default: the shipped one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--model", args.model] if args.model else []
        server = start_server(Path(tmp), *extra, "--no-embedding-model")
        try:
            client = httpx.Client(base_url=server.base_url, headers=server.auth(), timeout=120)
            models = [m["id"] for m in client.get("/v1/models").json()["data"]
                      if m["capabilities"].get("vision")]
            model = models[0]
            first_token_ms(client, model, seed=10_000)  # warm-up
            times, prompt_tokens = [], 0
            for i in range(args.runs):
                ms, prompt_tokens = first_token_ms(client, model, seed=i)
                times.append(ms)
            print(f"{model}: TTFT with one 512x512 image, median of {args.runs}: "
                  f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}; "
                  f"{prompt_tokens} prompt tokens)")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
