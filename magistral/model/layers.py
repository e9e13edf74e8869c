"""The decoder's building blocks: RMSNorm, grouped-query attention, SwiGLU feed-forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magistral.config import ModelArgs
from magistral.model.cache import KVCache
from magistral.model.moe import MoeFeedForward
from magistral.model.rope import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int, cache: KVCache | None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        if hasattr(self, "wqkv"):  # fused for serving (model/quantize.py)
            kv_width = self.n_kv_heads * self.head_dim
            q, k, v = self.wqkv(x).split([self.n_heads * self.head_dim, kv_width, kv_width], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = q.view(bsz, seqlen, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_id, start_pos, k, v)  # (B, Hkv, start_pos+T, D)
        if cache is not None and cache.mask is not None:  # batched decode: per-row lengths
            mask, causal = cache.mask, False
        elif seqlen == 1:
            mask, causal = None, False  # one new query sees every cached position
        elif start_pos == 0:
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
    def __init__(self, args: ModelArgs, layer_id: int):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args, layer_id)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = MoeFeedForward(args) if args.moe else FeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int, cache: KVCache | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)
        return h + self.feed_forward(self.ffn_norm(h))
