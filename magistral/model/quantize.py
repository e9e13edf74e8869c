"""Lean serving weights: bf16, or int4 weight-only linears (group-wise, asymmetric).

Decoding one token reads every weight once, so on CPU its speed is set by bytes per weight.
PyTorch's CPU int4 kernel (`_weight_int4pack_mm_for_cpu`) is fast for a few rows at a time but
slower than bf16 matmul for many, so an int4 layer keeps a bf16 copy for prefill-sized inputs.
Q4_1 GGUF weights (min + 15 steps per 32 values) re-quantize to int4 without loss: only the
scales round to bf16. q/k/v and gate/up projections are fused to halve the calls per layer.
The output head keeps bf16 for prefill and many rows, and takes an int8 (per-row scale) copy for
decode steps of a few rows, where reading its 49152 rows dominates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from magistral.model.layers import Attention, FeedForward, TransformerBlock
from magistral.model.transformer import Transformer

GROUP = 32
INT4_MAX_ROWS = 8  # above this many input rows the bf16 matmul is faster here
INT8_MAX_ROWS = 4  # the same crossover for the int8 kernel
# Batch invariance: PyTorch's int4 and int8 CPU kernels compute each row the same whatever the
# number of rows (checked bit for bit, 1..32 rows), but switching to the bf16 copy above the
# crossover changes the weights a row is multiplied by, so a request's greedy tokens depended on
# how many others ran beside it. Invariant layers keep the quantized kernel for every decode
# step, in chunks of the crossover size (the kernels slow down sharply above it).
CHUNK = 1 << 22  # weights quantised at a time: fp32 temporaries of 16 MB, whatever the matrix


def _chunk_rows(in_features: int) -> int:
    return max(16, CHUNK // in_features // 16 * 16)  # a multiple of 16, as int4 packing needs


def quantize_int4(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float → packed int4 weight and (in/group, out, 2) bf16 scales and zeros.
    Quantised a few rows at a time (every step is per row), so the fp32 temporaries of a large
    matrix take tens of MB, not several times its size, while a checkpoint streams in."""
    out_features, in_features = weight.shape
    step = _chunk_rows(in_features)
    packed = torch.empty(0, dtype=torch.uint8)
    scales_and_zeros = torch.empty(in_features // group, out_features, 2, dtype=torch.bfloat16)
    for start in range(0, out_features, step):
        rows = weight[start:start + step]
        w = rows.float().reshape(rows.shape[0], in_features // group, group)
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-8)
        q = ((w - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(rows.shape[0], in_features)
        zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
        scales_and_zeros[:, start:start + rows.shape[0]] = torch.stack(
            [scale.squeeze(-1), zero.squeeze(-1)], -1).transpose(0, 1)
        chunk = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)  # rows are packed apart
        if start == 0:
            packed = torch.empty(out_features, *chunk.shape[1:], dtype=chunk.dtype)
        packed[start:start + rows.shape[0]] = chunk
    return packed, scales_and_zeros


def _in_chunks(kernel: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, chunk: int
               ) -> torch.Tensor:
    if rows.shape[0] <= chunk:
        return kernel(rows)
    # zero rows pad the last chunk (each row is computed alike whatever else is in its chunk):
    # every call then has exactly `chunk` rows, and a compiled decode step depends only on the
    # number of chunks (engine/compiled.py), not on the exact number of rows
    count = rows.shape[0]
    chunks = torch.nn.functional.pad(rows, (0, 0, 0, -count % chunk)).view(-1, chunk, rows.shape[1])
    return torch.cat([kernel(part) for part in chunks.unbind()])[:count]


class Int4Linear(nn.Module):
    """int4 for decode steps, bf16 for prefill: a prompt gives the same numbers whether it is
    computed whole or after a cached prefix (see `dense_prefill`). `batch_invariant` False
    (serve --fast-batched-decode) lets decode steps of many rows take the faster bf16 copy."""

    batch_invariant = True

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        packed, scales = quantize_int4(weight)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales)
        self.register_buffer("weight", weight.to(torch.bfloat16))  # for prefill-sized inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        many = rows.shape[0] > INT4_MAX_ROWS and not self.batch_invariant
        if _prefill.active or many:
            out = rows @ self.weight.T
        else:
            out = _in_chunks(self._int4, rows, INT4_MAX_ROWS)
        return out.reshape(*x.shape[:-1], self.out_features)

    def _int4(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP, self.scales_and_zeros)


class Int8Linear(nn.Module):
    """int8 weights with one scale per output row for decode steps, bf16 for prefill (and, when
    not `batch_invariant`, for steps of many rows: the int8 kernel halves the bytes read but
    loses to bf16 matmul above 4 rows here)."""

    batch_invariant = True

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        scales = torch.empty(self.out_features)
        quantized = torch.empty(self.out_features, self.in_features, dtype=torch.int8)
        step = _chunk_rows(self.in_features)
        for start in range(0, self.out_features, step):  # bounded fp32 temporaries, as above
            rows = weight[start:start + step].float()
            scale = (rows.abs().amax(dim=1) / 127).clamp(min=1e-8)
            scales[start:start + len(rows)] = scale
            quantized[start:start + len(rows)] = (rows / scale[:, None]).round().clamp(-127, 127)
        self.register_buffer("int8_weight", quantized)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("weight", weight.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        many = rows.shape[0] > INT8_MAX_ROWS and not self.batch_invariant
        if _prefill.active or many:
            out = rows @ self.weight.T
        else:
            out = _in_chunks(self._int8, rows, INT8_MAX_ROWS)
        return out.reshape(*x.shape[:-1], self.out_features)

    def _int8(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(rows, self.int8_weight, self.scales)


def set_batch_invariant(model: nn.Module, invariant: bool) -> None:
    """Invariant (the default): a row's numbers never depend on the rows beside it. Not: decode
    steps of many rows use the faster bf16 copies (serve --fast-batched-decode)."""
    for module in model.modules():
        if isinstance(module, Int4Linear | Int8Linear):
            module.batch_invariant = invariant


class _PrefillSwitch(threading.local):
    """Per engine thread (several models may run at once). `active` is a class default, so it
    reads alike on a thread that never prefilled: a compiled decode step is guarded on it."""

    active = False


_prefill = _PrefillSwitch()


@contextmanager
def dense_prefill() -> Iterator[None]:
    """Within this block (on this thread) every Int4Linear uses its bf16 weights."""
    previous, _prefill.active = _prefill.active, True
    try:
        yield
    finally:
        _prefill.active = previous


def _linear(weight: torch.Tensor, mode: str) -> nn.Module:
    if mode == "int4" and weight.shape[1] % GROUP == 0:
        return Int4Linear(weight)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight = nn.Parameter(weight.to(torch.bfloat16), requires_grad=False)
    return linear


def validate_mode(mode: str) -> None:
    if mode not in ("none", "bf16", "int4"):
        raise ValueError(f"unknown quantization {mode!r} (none, bf16, int4)")


def quantize_block(layer: TransformerBlock, mode: str) -> None:
    """In place, one decoder block: fused q/k/v and gate/up, bf16 or int4 linears; the
    full-precision matrices are dropped as soon as their serving copies exist."""
    with torch.no_grad():
        attn: Attention = layer.attention
        attn.wqkv = _linear(torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]), mode)
        attn.wo = _linear(attn.wo.weight, mode)
        del attn.wq, attn.wk, attn.wv
        ffn = layer.feed_forward
        if isinstance(ffn, FeedForward):
            ffn.w13 = _linear(torch.cat([ffn.w1.weight, ffn.w3.weight]), mode)
            ffn.w2 = _linear(ffn.w2.weight, mode)
            del ffn.w1, ffn.w3


def finish_quantization(model: Transformer, mode: str) -> None:
    """After every block: the rest to bf16, and the output head's serving form."""
    with torch.no_grad():
        head = model.output.weight
        model.to(torch.bfloat16)
        # the head is the Q8_0 embedding in GGUFs: int8 suits it, int4 would cost it ~12% error
        model.output = Int8Linear(head) if mode == "int4" else _linear(head, "bf16")
        if model.args.tied_embeddings:
            model.tok_embeddings.weight = nn.Parameter(head.to(torch.bfloat16), requires_grad=False)


def quantize_model(model: Transformer, mode: str) -> Transformer:
    """In place: "none" keeps fp32; "bf16" casts; "int4" also makes the decoder's linears int4.
    Vision encoder and MoE experts stay bf16. (Loading a checkpoint with a mode does the same
    block by block without ever holding it whole: model/load_common.assemble.)"""
    validate_mode(mode)
    if mode == "none":
        return model
    for layer in model.layers:
        quantize_block(layer, mode)
    finish_quantization(model, mode)
    return model
