"""Mixture-of-experts feed-forward (Mixtral): a router picks k of E SwiGLU experts per token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from magistral.config import ModelArgs


class MoeFeedForward(nn.Module):
    """Expert weights are stacked, (E, out, in), so one tensor serves both the readable
    per-expert loop and the batched gather path."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        assert args.moe is not None
        self.num_experts = args.moe.num_experts
        self.top_k = args.moe.num_experts_per_tok
        self.gate = nn.Linear(args.dim, self.num_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(self.num_experts, args.hidden_dim, args.dim))
        self.w2 = nn.Parameter(torch.empty(self.num_experts, args.dim, args.hidden_dim))
        self.w3 = nn.Parameter(torch.empty(self.num_experts, args.hidden_dim, args.dim))
        for w in (self.w1, self.w2, self.w3):
            nn.init.normal_(w, std=0.02)
        self.batched = True
        self.router_logits: torch.Tensor | None = None  # last forward's, for the balancing loss

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, dim) → weights (N, k) fp32 softmax over the chosen logits, experts (N, k)."""
        logits = self.gate(x)
        self.router_logits = logits
        top_logits, experts = torch.topk(logits, self.top_k, dim=-1)
        return torch.softmax(top_logits, dim=-1, dtype=torch.float32), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, experts = self.route(flat)
        out = self.forward_batched(flat, weights, experts) if self.batched else \
            self.forward_per_expert(flat, weights, experts)
        return out.reshape(shape)

    def forward_per_expert(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor
                           ) -> torch.Tensor:
        """The readable path: each expert runs on the tokens routed to it."""
        out = torch.zeros_like(x)
        for e in range(self.num_experts):
            token, slot = torch.where(experts == e)
            if token.numel() == 0:
                continue
            h = x[token]
            y = (F.silu(h @ self.w1[e].T) * (h @ self.w3[e].T)) @ self.w2[e].T
            out.index_add_(0, token, y * weights[token, slot, None].to(x.dtype))
        return out

    def forward_batched(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor
                        ) -> torch.Tensor:
        """All (token, expert) pairs at once: tokens sorted by expert, one grouped matmul per
        expert over contiguous rows, no Python work per token."""
        n, k = experts.shape
        order = experts.reshape(-1).argsort(stable=True)
        token = order // k
        counts = torch.bincount(experts.reshape(-1), minlength=self.num_experts).tolist()
        h = x[token]
        outputs = []
        for e, rows in zip(range(self.num_experts), h.split(counts), strict=True):
            if rows.shape[0]:
                outputs.append((F.silu(rows @ self.w1[e].T) * (rows @ self.w3[e].T)) @ self.w2[e].T)
        y = torch.cat(outputs) * weights.reshape(-1)[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token, y)


def load_balancing_loss(router_logits: list[torch.Tensor], num_experts: int, top_k: int) -> torch.Tensor:
    """Switch-Transformer auxiliary loss as transformers computes it (no padding mask):
    E · Σ_e (fraction of tokens routed to e) · (mean router probability of e)."""
    logits = torch.cat([r.reshape(-1, num_experts) for r in router_logits])
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    _, selected = torch.topk(probs, top_k, dim=-1)
    expert_mask = F.one_hot(selected, num_experts).float()  # (N, k, E)
    tokens_per_expert = expert_mask.mean(dim=0)  # (k, E)
    router_prob_per_expert = probs.mean(dim=0)  # (E,)
    return (tokens_per_expert * router_prob_per_expert.unsqueeze(0)).sum() * num_experts
