"""The decoder's building blocks: RMSNorm, grouped-query attention, SwiGLU feed-forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magistral.config import ModelArgs
from magistral.model.cache import PV_BLOCK, LayerKV
from magistral.model.moe import MoeFeedForward
from magistral.model.rope import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # one fused op, fp32
        return self.weight * normed.type_as(x)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                     ) -> torch.Tensor:
    """One query per row: q (B, H, 1, D) over k/v (B, Hkv, L, D), mask (B, 1, 1, L) or None.
    Plain matmuls beat the fused CPU kernel at this size; query heads are grouped per KV head.

    The weighted sum of values is taken PV_BLOCK positions at a time, each block one matmul of
    the same shape, the blocks then added in order. One matmul over all L positions sums in an
    order that depends on L (bf16 here: a row attending to its 38 positions alone and the same
    row padded to 40 beside a longer one differed in the last bits), so a request's tokens
    depended on the longest sequence in its batch; padded blocks add exact zeros.

    Under torch.compile (engine/compiled.py) the same sums are written as products and sums,
    which Inductor fuses into loops: bf16 matmuls of this shape take ~50 µs each here."""
    if torch.compiler.is_compiling():
        return _decode_attention_loops(q, k, v, mask)
    bsz, n_heads, _, head_dim = q.shape
    n_kv, length = k.shape[1], k.shape[2]
    group = n_heads // n_kv
    grouped = q.reshape(bsz, n_kv, group, head_dim)
    scores = (grouped @ k.transpose(-1, -2)).float() * head_dim ** -0.5  # (B, Hkv, group, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    pad = -length % PV_BLOCK
    if pad:
        probs, v = F.pad(probs, (0, pad)), F.pad(v, (0, 0, 0, pad))
    blocks = (length + pad) // PV_BLOCK
    parts = (probs.view(bsz, n_kv, group, blocks, PV_BLOCK).transpose(2, 3)
             @ v.reshape(bsz, n_kv, blocks, PV_BLOCK, head_dim))  # (B, Hkv, blocks, group, D)
    out = parts.float().sum(2).to(v.dtype)
    return out.reshape(bsz, n_heads, 1, head_dim)


def _decode_attention_loops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                            ) -> torch.Tensor:
    """`decode_attention` for Inductor: the same blocks of PV_BLOCK positions, summed in order,
    with the dot products as elementwise products and sums (computed in fp32)."""
    bsz, n_heads, _, head_dim = q.shape
    n_kv, length = k.shape[1], k.shape[2]
    group = n_heads // n_kv
    grouped = q.reshape(bsz, n_kv, group, 1, head_dim).float()
    scores = (grouped * k[:, :, None].float()).sum(-1) * head_dim ** -0.5  # (B, Hkv, group, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype).float()
    pad = -length % PV_BLOCK
    if pad:
        probs, v = F.pad(probs, (0, pad)), F.pad(v, (0, 0, 0, pad))
    blocks = (length + pad) // PV_BLOCK
    parts = (probs.view(bsz, n_kv, group, blocks, PV_BLOCK, 1)  # → (B, Hkv, group, blocks, D)
             * v.reshape(bsz, n_kv, 1, blocks, PV_BLOCK, head_dim).float()).sum(4)
    return parts.sum(3).to(v.dtype).reshape(bsz, n_heads, 1, head_dim)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int, cache: LayerKV | None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        if hasattr(self, "wqkv"):  # fused for serving (model/quantize.py): one matmul, one rope
            qkv = self.wqkv(x).view(bsz, seqlen, self.n_heads + 2 * self.n_kv_heads, self.head_dim)
            qk = apply_rope(qkv[:, :, :self.n_heads + self.n_kv_heads].transpose(1, 2), cos, sin)
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)
            v = qkv[:, :, self.n_heads + self.n_kv_heads:].transpose(1, 2)
        else:
            q = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim).transpose(1, 2)
            k = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)  # (B, Hkv, start_pos+T, D)
        if seqlen == 1:
            out = decode_attention(q, k, v, cache.mask if cache is not None else None)
        else:
            if start_pos == 0:
                mask, causal = None, True
            else:  # a prompt chunk after cached positions: causal within the chunk, full before it
                total = start_pos + seqlen
                mask = torch.ones(seqlen, total, dtype=torch.bool, device=x.device).tril(start_pos)
                causal = False
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                 enable_gqa=self.n_heads != self.n_kv_heads)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)  # down
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "w13"):  # fused for serving (model/quantize.py)
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = MoeFeedForward(args) if args.moe else FeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int, cache: LayerKV | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)
        return h + self.feed_forward(self.ffn_norm(h))
