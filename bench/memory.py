"""Where a server's bytes go: RSS after each thing `magistral serve` loads, beside the exact
tensor bytes of each part (weights by kind, KV slots, prefix cache), in one process.

    python bench/memory.py
Loads what `serve` loads by default (SmolLM2 int4, magistral-mini, the embedder), runs a
500-token prompt and 16 concurrent streams through the SmolLM2 engine, and prints a table.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magistral.engine.engine import GenerationRequest  # noqa: E402
from magistral.engine.heap import release_free_heap  # noqa: E402
from magistral.engine.registry import default_models, load_embedder, load_model  # noqa: E402
from magistral.engine.sampling import SamplingParams  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tensor_mb_by_kind(model: torch.nn.Module) -> dict[str, float]:
    """Parameter and buffer bytes by what they are for (shared tensors counted once)."""
    seen, kinds = set(), defaultdict(float)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        leaf = name.rsplit(".", 1)[-1]
        kind = {"packed": "int4 packed", "scales_and_zeros": "int4 scales", "int8_weight": "int8 head",
                "scales": "int8 head"}.get(leaf)
        if kind is None:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            quantized = hasattr(owner, "packed") or hasattr(owner, "int8_weight")
            kind = "bf16 copies for prefill" if quantized else f"{tensor.dtype} other".replace("torch.", "")
        kinds[kind] += tensor.numel() * tensor.element_size() / 2**20
    return dict(kinds)


async def stream(engine, ids: list[int], tokens: int) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=tokens)
    async for _ in engine.generate(GenerationRequest(ids, params)):
        pass


def main() -> None:
    torch.set_grad_enabled(False)
    rows = [("python + torch + magistral imported", rss_mb(), "")]
    specs = default_models()
    smol = load_model(specs[0])
    engine = smol.engine
    parts = tensor_mb_by_kind(engine.model)
    rows.append(("SmolLM2-135M, int4 serving weights", rss_mb(),
                 ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))))
    kv = sum(t.numel() * t.element_size() for t in [*engine.cache.keys, *engine.cache.values]) / 2**20
    rows[-1] = (*rows[-1][:2], rows[-1][2] + f"; KV slots {kv:.0f} MB ({engine.cache.held} of "
                f"{engine.max_active} slots held × {engine.cache.capacity} positions)")
    if len(specs) > 1:
        mini = load_model(specs[1])
        weights = sum(p.numel() * p.element_size() for p in mini.engine.model.parameters()) / 2**20
        rows.append(("magistral-mini (fp32)", rss_mb(), f"{weights:.0f} MB weights"))
    load_embedder()
    rows.append(("embedder (all-MiniLM-L6-v2)", rss_mb(), ""))
    ids = list(range(1000, 1500))
    asyncio.run(stream(engine, ids, 8))
    rows.append(("after a 500-token prompt", rss_mb(),
                 f"prefix cache {engine.prefix_cache.used / 2**20:.0f} MB; KV slots "
                 f"{engine.cache.nbytes / 2**20:.0f} MB "
                 f"({engine.cache.held} × {engine.cache.capacity} positions)"))

    async def many() -> None:
        await asyncio.gather(*(stream(engine, list(range(2000 + i, 2100 + i)), 64) for i in range(16)))

    asyncio.run(many())
    kv = sum(t.numel() * t.element_size() for t in [*engine.cache.keys, *engine.cache.values]) / 2**20
    rows.append(("after 16 concurrent streams", rss_mb(),
                 f"prefix cache {engine.prefix_cache.used / 2**20:.0f} MB; KV slots {kv:.0f} MB "
                 f"({engine.cache.held} × {engine.cache.capacity} positions)"))
    release_free_heap()
    rows.append(("after giving freed heap back (malloc_trim)", rss_mb(), ""))
    print(f"{'stage':<44} {'RSS MB':>8}  notes")
    for stage, rss, note in rows:
        print(f"{stage:<44} {rss:>8.0f}  {note}")


if __name__ == "__main__":
    main()
