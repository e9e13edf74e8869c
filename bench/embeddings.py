"""What batching buys /v1/embeddings: the same 512 sentences embedded one request at a time, in
concurrent single-input requests (which the embedder batches together), and in requests of 64
inputs; sentences per second, median of several runs, all through the real HTTP server.

    python bench/embeddings.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server, stop_server  # noqa: E402

WORDS = ("the model reads a chart of monthly sales and explains which region grew fastest and why "
         "a customer asks how to reset a password while travelling without their phone").split()


def sentences(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8 + i % 24)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=512)
    args = parser.parse_args()
    texts = sentences(args.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            with httpx.Client(base_url=server.base_url, headers=server.auth(), timeout=600) as client:
                def embed(batch: list[str]) -> None:
                    client.post("/v1/embeddings", json={"model": "mistral-embed", "input": batch}
                                ).raise_for_status()

                def one_by_one() -> None:
                    for text in texts:
                        embed([text])

                def concurrent_singles() -> None:
                    with ThreadPoolExecutor(16) as pool:
                        list(pool.map(lambda t: embed([t]), texts))

                def batches_of_64() -> None:
                    for i in range(0, len(texts), 64):
                        embed(texts[i:i + 64])

                embed(texts[:8])  # warm-up
                print(f"{args.inputs} sentences of 8-31 words, sentences/s (median of {args.runs} runs)")
                for name, way in (("one request per sentence, one at a time", one_by_one),
                                  ("one request per sentence, 16 concurrent", concurrent_singles),
                                  ("requests of 64 sentences", batches_of_64)):
                    rates = []
                    for _ in range(args.runs):
                        started = time.perf_counter()
                        way()
                        rates.append(args.inputs / (time.perf_counter() - started))
                    print(f"  {name:45s} {statistics.median(rates):8.1f}")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
