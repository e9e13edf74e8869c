"""MoE decode: experts grouped per step vs the per-expert loop vs a dense model of the same
active size, at batch 1 and 16, through `Transformer.decode` with a slot KV cache.

    python bench/moe_decode.py            # a Mixtral-shaped model (random weights) and magistral-mini

"Mixtral-shaped": Mixtral 8x7B's proportions (8 experts, top-2, hidden = 3.5 × dim, 4 query
heads per KV head) at dim 1024 and 8 layers, fp32 (what our MoE serves in). The dense model has
one feed-forward of 2 × the expert hidden size: the same weights touched per token at batch 1.
Prints milliseconds per decode step (median of --steps after warm-up) and tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magistral.config import ModelArgs, MoeArgs  # noqa: E402
from magistral.model.cache import SlotKVCache  # noqa: E402
from magistral.model.moe import MoeFeedForward  # noqa: E402
from magistral.model.transformer import Transformer  # noqa: E402

MIXTRAL_SHAPED = ModelArgs(dim=1024, n_layers=8, head_dim=128, hidden_dim=3584, n_heads=8, n_kv_heads=2,
                           vocab_size=32000, norm_eps=1e-5, rope_theta=1e6, max_seq_len=4096,
                           moe=MoeArgs(num_experts=8, num_experts_per_tok=2))


def step_ms(model: Transformer, batch: int, steps: int, context: int = 200) -> float:
    """Median ms of one decode step for `batch` rows at ~`context` positions."""
    with torch.inference_mode():
        cache = SlotKVCache(model.args, slots=batch, capacity=context + steps + 8,
                            max_capacity=model.args.max_seq_len)
        positions = [context + i % 3 for i in range(batch)]
        g = torch.Generator().manual_seed(0)
        times = []
        for i in range(steps + 3):
            tokens = torch.randint(0, model.args.vocab_size, (batch,), generator=g)
            start = time.perf_counter()
            model.decode(tokens, cache.for_decode(positions))
            if i >= 3:
                times.append(time.perf_counter() - start)
            positions = [p + 1 for p in positions]
    return statistics.median(times) * 1000


def set_moe_path(model: Transformer, batched: bool) -> None:
    for module in model.modules():
        if isinstance(module, MoeFeedForward):
            module.batched = batched


def compare(name: str, moe: Transformer, dense: Transformer, steps: int) -> None:
    print(f"\n{name}: {sum(p.numel() for p in moe.parameters()) / 1e6:.1f}M parameters (MoE), "
          f"{sum(p.numel() for p in dense.parameters()) / 1e6:.1f}M (dense, same active size)")
    print(f"{'batch':>6} {'grouped ms':>11} {'per-expert ms':>14} {'dense ms':>9} {'grouped/dense':>14} "
          f"{'grouped tok/s':>14}")
    for batch in (1, 16):
        set_moe_path(moe, True)
        grouped = step_ms(moe, batch, steps)
        set_moe_path(moe, False)
        loop = step_ms(moe, batch, steps)
        set_moe_path(moe, True)
        flat = step_ms(dense, batch, steps)
        print(f"{batch:>6} {grouped:>11.2f} {loop:>14.2f} {flat:>9.2f} {grouped / flat:>13.2f}x "
              f"{batch * 1000 / grouped:>14.1f}")


def dense_twin(args: ModelArgs) -> Transformer:
    """Same attention and embeddings; one SwiGLU of top_k × the expert width."""
    assert args.moe is not None
    return Transformer(replace(args, moe=None, hidden_dim=args.hidden_dim * args.moe.num_experts_per_tok,
                               vision=None)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    compare("Mixtral-shaped (dim 1024, 8 layers, 8 experts top-2)", Transformer(MIXTRAL_SHAPED).eval(),
            dense_twin(MIXTRAL_SHAPED), args.steps)
    from magistral.model.checkpoints import load_checkpoint
    from magistral.train.ship import SHIPPED

    mini, _ = load_checkpoint(SHIPPED, quantize="none")
    compare("magistral-mini (shipped)", mini.eval(), dense_twin(mini.args), args.steps)


if __name__ == "__main__":
    main()
