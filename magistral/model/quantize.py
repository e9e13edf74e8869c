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
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from magistral.model.layers import Attention, FeedForward
from magistral.model.transformer import Transformer

GROUP = 32
INT4_MAX_ROWS = 8  # above this many input rows the bf16 matmul is faster here
INT8_MAX_ROWS = 4  # the same crossover for the int8 kernel


def quantize_int4(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float → packed int4 weight and (in/group, out, 2) bf16 scales and zeros."""
    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // group, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    q = ((w - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(out_features, in_features)
    zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scales_and_zeros = torch.stack([scale.squeeze(-1), zero.squeeze(-1)], -1).transpose(0, 1)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
    return packed, scales_and_zeros.contiguous().to(torch.bfloat16)


class Int4Linear(nn.Module):
    """int4 for decode steps, bf16 for prefill: a prompt gives the same numbers whether it is
    computed whole or after a cached prefix (see `dense_prefill`)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        packed, scales = quantize_int4(weight)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales)
        self.register_buffer("weight", weight.to(torch.bfloat16))  # for prefill-sized inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if getattr(_prefill, "active", False) or rows.shape[0] > INT4_MAX_ROWS:
            out = rows.to(torch.bfloat16) @ self.weight.T
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), self.packed, GROUP,
                                                              self.scales_and_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)


class Int8Linear(nn.Module):
    """int8 weights with one scale per output row for decode steps of few rows, bf16 otherwise
    (the int8 kernel halves the bytes read but loses to bf16 matmul above 4 rows here)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        scales = (weight.float().abs().amax(dim=1) / 127).clamp(min=1e-8)
        quantized = (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.register_buffer("int8_weight", quantized)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("weight", weight.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if getattr(_prefill, "active", False) or rows.shape[0] > INT8_MAX_ROWS:
            out = rows @ self.weight.T
        else:
            out = torch.ops.aten._weight_int8pack_mm(rows, self.int8_weight, self.scales)
        return out.reshape(*x.shape[:-1], self.out_features)


_prefill = threading.local()  # per engine thread: several models may run at once


@contextmanager
def dense_prefill() -> Iterator[None]:
    """Within this block (on this thread) every Int4Linear uses its bf16 weights."""
    previous, _prefill.active = getattr(_prefill, "active", False), True
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


def quantize_model(model: Transformer, mode: str) -> Transformer:
    """In place: "none" keeps fp32; "bf16" casts; "int4" also makes the decoder's linears int4.
    Vision encoder and MoE experts stay bf16."""
    if mode == "none":
        return model
    if mode not in ("bf16", "int4"):
        raise ValueError(f"unknown quantization {mode!r} (none, bf16, int4)")
    with torch.no_grad():
        for layer in model.layers:
            attn: Attention = layer.attention
            attn.wqkv = _linear(torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]), mode)
            attn.wo = _linear(attn.wo.weight, mode)
            del attn.wq, attn.wk, attn.wv
            ffn = layer.feed_forward
            if isinstance(ffn, FeedForward):
                ffn.w13 = _linear(torch.cat([ffn.w1.weight, ffn.w3.weight]), mode)
                ffn.w2 = _linear(ffn.w2.weight, mode)
                del ffn.w1, ffn.w3
        head = model.output.weight
        model.to(torch.bfloat16)
        # the head is the Q8_0 embedding in GGUFs: int8 suits it, int4 would cost it ~12% error
        model.output = Int8Linear(head) if mode == "int4" else _linear(head, "bf16")
        if model.args.tied_embeddings:
            model.tok_embeddings.weight = nn.Parameter(head.to(torch.bfloat16), requires_grad=False)
    return model
