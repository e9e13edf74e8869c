"""The decoder: embeddings → blocks → norm → output head."""

from __future__ import annotations

import torch
from torch import nn

from magistral.config import ModelArgs
from magistral.model.cache import KVCache
from magistral.model.layers import RMSNorm, TransformerBlock
from magistral.model.rope import rope_frequencies


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def tie_weights(self) -> None:
        self.output.weight = self.tok_embeddings.weight

    def rope_tables(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions [0, end), grown on demand so short requests stay cheap."""
        if self._rope is None or self._rope[0].shape[0] < end:
            size = max(end, 4096) if self._rope is None else max(end, 2 * self._rope[0].shape[0])
            size = min(size, max(end, self.args.max_seq_len))
            cos, sin = rope_frequencies(self.args.head_dim, self.args.rope_theta, size)
            device = self.tok_embeddings.weight.device
            self._rope = (cos.to(device), sin.to(device))
        return self._rope

    def forward(self, tokens: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """tokens (B, T) at positions [start_pos, start_pos+T) → logits (B, T or 1, vocab)."""
        seqlen = tokens.shape[1]
        cos, sin = self.rope_tables(start_pos + seqlen)
        cos, sin = cos[start_pos:start_pos + seqlen], sin[start_pos:start_pos + seqlen]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, start_pos, cache)
        if last_only:
            h = h[:, -1:]
        return self.output(self.norm(h)).float()
