"""A 131072-token prompt through a tiny config: chunked prefill into a KV cache sized by the
prompt. Prints wall time and peak memory per prompt length, to show memory growing linearly.

    python bench/long_context.py                    # 8k, 32k and 128k tokens
    python bench/long_context.py --lengths 131072
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magistral.config import tiny_args  # noqa: E402
from magistral.engine.engine import PREFILL_CHUNK  # noqa: E402
from magistral.model.cache import KVCache  # noqa: E402
from magistral.model.transformer import Transformer  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(length: int, chunk: int) -> dict:
    torch.manual_seed(0)
    model = Transformer(tiny_args(max_seq_len=131072, rope_theta=1e9)).eval()
    tokens = torch.randint(0, model.args.vocab_size, (1, length))
    base = rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        cache = KVCache(model.args, capacity=length)  # sized by the request
        for pos in range(0, length, chunk):
            logits = model(tokens[:, pos:pos + chunk], pos, cache, last_only=True)
        next_token = int(logits[0, -1].argmax())
        model(torch.tensor([[next_token]]), length - 1, cache)  # one decode step at the far end
    wall = time.perf_counter() - start
    cache_mb = sum(t.numel() * t.element_size() for t in cache.keys + cache.values) / 2**20
    return {"tokens": length, "wall_s": wall, "tokens_per_s": length / wall, "kv_cache_mb": cache_mb,
            "rss_growth_mb": rss_mb() - base, "peak_rss_mb": peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--chunk", type=int, default=PREFILL_CHUNK)
    args = parser.parse_args()
    print(f"tiny config {tiny_args(max_seq_len=131072, rope_theta=1e9)}, prefill chunk {args.chunk}")
    print(f"{'tokens':>8} {'wall s':>8} {'tok/s':>8} {'KV MB':>8} {'RSS+ MB':>8} {'peak RSS MB':>12}")
    for length in args.lengths:
        r = run(length, args.chunk)
        print(f"{r['tokens']:>8} {r['wall_s']:>8.1f} {r['tokens_per_s']:>8.0f} {r['kv_cache_mb']:>8.1f} "
              f"{r['rss_growth_mb']:>8.1f} {r['peak_rss_mb']:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
