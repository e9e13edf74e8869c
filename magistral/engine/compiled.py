"""The decode step without per-op dispatch: a TransformerBlock compiled by Inductor.

Eager decoding of a small model spends most of a step dispatching ~50 small ops per layer.
Inductor fuses the norms, rope, attention and activations into a few C++ loops around the
quantized matmul kernels. The block is compiled once and the same compiled code runs every
layer: each layer passes its own weights and KV buffers (model/cache.DecodeLayer), so a cold
compile costs one layer's worth, not the whole model's (~20 s here for the three shapes a
16-row engine needs, on a background thread while the engine decodes eagerly). Batch size and
attention length are dynamic; Inductor's cache on disk (TORCHINDUCTOR_CACHE_DIR,
~/.cache/magistral/inductor by default) spares a restart the C++ build. The eager block stays
the reference the tests compare against (tests/engine/test_compiled.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class _GuardSkipping:
    """Ready decoders skip guard evaluation during their steps. That stance is process-wide (one
    setting, not per thread), so it is set here when the first such step starts and reset when
    the last ends, never while any decoder compiles: another decoder's first compile (the same
    block function, so a recompile to dynamo) would fail under it. A compile waits for the
    steps in flight; meanwhile steps evaluate guards."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.compiling = self.skipping = 0

    @contextmanager
    def compiling_now(self) -> Iterator[None]:
        with self._changed:
            self.compiling += 1
            self._changed.wait_for(lambda: self.skipping == 0)
        try:
            yield
        finally:
            with self._changed:
                self.compiling -= 1

    @contextmanager
    def step(self) -> Iterator[None]:
        with self._changed:
            skip = self.compiling == 0
            if skip and self.skipping == 0:
                torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
            self.skipping += skip
        try:
            yield
        finally:
            with self._changed:
                self.skipping -= skip
                if skip and self.skipping == 0:
                    torch.compiler.set_stance("default")
                    self._changed.notify_all()


_guards = _GuardSkipping()


def batch_buckets(max_batch: int) -> list[int]:
    """One batch size per compiled graph: 1 (specialised), 2–8, then one per further chunk of
    INT4_MAX_ROWS rows (the int4 kernel runs in chunks of that many, model/quantize.py)."""
    return sorted({1, min(2, max_batch), *range(INT4_MAX_ROWS + 1, max_batch + 1, INT4_MAX_ROWS)})


class CompiledDecoder:
    """`model.decode` with every block run by one compiled function, compiled for every batch
    bucket up to `max_batch` — on a background thread by default, so a server is up in seconds
    and decodes eagerly until the graphs are ready. After warm-up, guards are not evaluated per
    call (they cost ~4 ms a step for 30 layers here), and a step that would need a new graph (a
    shape never warmed up) runs eagerly instead."""

    def __init__(self, model: Transformer, max_batch: int, dtype: torch.dtype, background: bool = True):
        self.model, self.max_batch, self.dtype = model, max_batch, dtype
        self.block: Callable[..., torch.Tensor] = _run_block  # compiled by the warm-up
        self.eager_steps = 0  # steps that fell back to the eager block
        self.ready = threading.Event()
        self.error: BaseException | None = None
        if background:  # a short-lived thread: it leaves no OpenMP team behind (registry.py)
            threading.Thread(target=self._warm_up, name="magistral-compile", daemon=True).start()
        else:
            self._warm_up()
            if self.error is not None:
                raise self.error

    def _warm_up(self) -> None:
        with _guards.compiling_now():
            self._compile()

    def _compile(self) -> None:
        started = time.monotonic()
        try:
            # torch.compile imports dynamo and Inductor (~2 s): here, not on the server's start
            self.block = torch.compile(_run_block, dynamic=True, fullgraph=True)
            # sizes that coincide while tracing are assumed equal ("duck sizing"): the scratch
            # cache's capacity (3 blocks) differs from the attention length (2 blocks), and the
            # slots it holds (all) from the batches warmed up. Inference mode, as the engine's
            # worker runs: grad mode and the cache's kind of tensor (the engine's is made in
            # inference mode) are guarded.
            with torch.inference_mode():
                scratch = SlotKVCache(self.model.args, slots=self.max_batch, capacity=3 * PV_BLOCK,
                                      max_capacity=self.model.args.max_seq_len, dtype=self.dtype)
                scratch.ensure(3 * PV_BLOCK, self.max_batch)  # every slot held: no batch coincides
                for batch in batch_buckets(self.max_batch):
                    self.model.decode(torch.zeros(batch, dtype=torch.long),
                                      scratch.for_decode([PV_BLOCK] * batch), self.block)
        except Exception as exc:  # no compiler, or a model Inductor cannot take: stay eager
            self.error = exc
            log.warning("decode step not compiled, decoding eagerly: %s: %s", type(exc).__name__, exc)
            return
        log.info("compiled decode step ready in %.1f s", time.monotonic() - started)
        self.ready.set()

    def __call__(self, tokens: torch.Tensor, cache: DecodeView) -> torch.Tensor:
        if not self.ready.is_set():
            return self.model.decode(tokens, cache)
        try:
            with _guards.step():
                return self.model.decode(tokens, cache, self.block)
        except RuntimeError as exc:  # a shape no warm-up covered: this step eagerly
            if "Recompilation" not in str(exc):
                raise
            self.eager_steps += 1
            log.warning("compiled decode step needs a new graph (%d rows, %d positions); eager instead",
                        tokens.shape[0], cache.length)
            return self.model.decode(tokens, cache)
