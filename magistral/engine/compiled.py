"""The decode step without per-op dispatch: a TransformerBlock compiled by Inductor.

Eager decoding of a small model spends most of a step dispatching ~50 small ops per layer.
Inductor fuses the norms, rope, attention and activations into a few C++ loops around the
quantized matmul kernels. The block is compiled once and the same compiled code runs every
layer: each layer passes its own weights and KV buffers (model/cache.DecodeLayer), so a cold
compile costs one layer's worth, not the whole model's (~20 s here, for the three shapes a
16-row engine needs). Batch size and attention length are dynamic; Inductor's cache on disk
(TORCHINDUCTOR_CACHE_DIR, ~/.cache/magistral/inductor by default) spares a restart the C++
build. The eager block stays the reference the tests compare against (tests/engine/test_compiled.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from magistral.model.cache import PV_BLOCK, DecodeView, LayerKV, SlotKVCache
from magistral.model.layers import TransformerBlock
from magistral.model.quantize import INT4_MAX_ROWS
from magistral.model.transformer import Transformer

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "magistral" / "inductor"))
log = logging.getLogger(__name__)


def _run_block(layer: TransformerBlock, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               start_pos: int, kv: LayerKV) -> torch.Tensor:
    return layer(h, cos, sin, start_pos, kv)


def batch_buckets(max_batch: int) -> list[int]:
    """One batch size per compiled graph: 1 (specialised), 2–8, then one per further chunk of
    INT4_MAX_ROWS rows (the int4 kernel runs in chunks of that many, model/quantize.py)."""
    return sorted({1, min(2, max_batch), *range(INT4_MAX_ROWS + 1, max_batch + 1, INT4_MAX_ROWS)})


class CompiledDecoder:
    """`model.decode` with every block run by one compiled function. Compiled for every batch
    bucket up to `max_batch` when built; after that, guards are not evaluated per call (they
    cost ~4 ms a step for 30 layers here), and a step that would need a new graph (a shape
    never warmed up) runs eagerly instead."""

    def __init__(self, model: Transformer, max_batch: int, dtype: torch.dtype):
        self.model = model
        self.block = torch.compile(_run_block, dynamic=True, fullgraph=True)
        self.eager_steps = 0  # steps that fell back to the eager block
        # sizes that coincide while tracing are assumed equal ("duck sizing"): the scratch cache's
        # capacity (3 blocks) differs from the attention length (2 blocks) and from every batch
        # inference mode, as the engine's worker runs: grad mode and the cache's kind of tensor
        # (the engine's is made in inference mode) are guarded
        with torch.inference_mode():
            scratch = SlotKVCache(model.args, slots=max_batch, capacity=3 * PV_BLOCK,
                                  max_capacity=model.args.max_seq_len, dtype=dtype)
            for batch in batch_buckets(max_batch):
                model.decode(torch.zeros(batch, dtype=torch.long), scratch.for_decode([PV_BLOCK] * batch),
                             self.block)

    def __call__(self, tokens: torch.Tensor, cache: DecodeView) -> torch.Tensor:
        try:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return self.model.decode(tokens, cache, self.block)
        except RuntimeError as exc:  # a shape no warm-up covered: this step eagerly
            if "Recompilation" not in str(exc):
                raise
            self.eager_steps += 1
            log.warning("compiled decode step needs a new graph (%d rows, %d positions); eager instead",
                        tokens.shape[0], cache.length)
            return self.model.decode(tokens, cache)
