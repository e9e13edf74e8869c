"""Batch invariance through the HTTP API: sixteen different prompts sent together at
temperature 0, then one at a time (their prompts now prefix-cached); how many got different
greedy tokens, and where they first differ. The issue's target is none (0 of 16).

    python bench/determinism.py [--rounds 3] [--fast-batched-decode]   # starts its own server
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import Server, start_server, stop_server  # noqa: E402

QUESTIONS = ["Name a colour.", "What is 2+2?", "Say hello in French.", "Name a planet.",
             "Capital of Italy?", "Give me a fruit.", "Count to five.", "What do bees make?",
             "Name an ocean.", "What is water made of?", "Write a haiku about snow.", "Who wrote Hamlet?",
             "Name a metal.", "What is a triangle?", "Translate 'cat' to Spanish.",
             "What day comes after Monday?"]


def first_difference(a: list[str], b: list[str]) -> int:
    return next((t for t in range(min(len(a), len(b))) if a[t] != b[t]), min(len(a), len(b)))


def greedy(server: Server, prompt: str) -> list[str]:
    body = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 24, "logprobs": True,
            "messages": [{"role": "user", "content": prompt}]}
    response = server.post("/v1/chat/completions", body, timeout=300)
    response.raise_for_status()
    return [t["token"] for t in response.json()["choices"][0]["logprobs"]["content"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast-batched-decode", action="store_true")
    args = parser.parse_args()
    extra = ["--fast-batched-decode"] if args.fast_batched_decode else []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--no-embedding-model", *extra)
        try:
            for round_ in range(args.rounds):
                prompts = [f"{q} ({round_}.{i})" for i, q in enumerate(QUESTIONS)]
                with ThreadPoolExecutor(len(prompts)) as pool:
                    together = list(pool.map(lambda p: greedy(server, p), prompts))
                alone = [greedy(server, p) for p in prompts]
                differ = [(i, first_difference(a, b))
                          for i, (a, b) in enumerate(zip(together, alone, strict=True)) if a != b]
                print(f"round {round_ + 1}: {len(differ)} of {len(prompts)} differ"
                      + (f" (prompt, first differing token: {differ})" if differ else ""), flush=True)
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
