"""The decoder: embeddings (with image features scattered in) → blocks → norm → output head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from magistral.config import ModelArgs
from magistral.model.cache import DecodeView, KVCache
from magistral.model.layers import RMSNorm, TransformerBlock
from magistral.model.rope import rope_frequencies
from magistral.model.vision import ColumnMerger, PatchMerger, VisionEncoder, VisionLanguageAdapter


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if (vision := args.vision) is not None:
            self.vision_encoder = VisionEncoder(vision)
            self.pre_mm_projector_norm = RMSNorm(vision.hidden_size, args.norm_eps) \
                if vision.adapter_norm else None
            self.patch_merger: nn.Module | None = (
                ColumnMerger(vision) if vision.column_tokens
                else PatchMerger(vision) if vision.spatial_merge_size > 1 else None)
            self.vision_language_adapter = VisionLanguageAdapter(vision, args.dim)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def tie_weights(self) -> None:
        self.output.weight = self.tok_embeddings.weight

    def rope_tables(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions [0, end), grown on demand so short requests stay cheap."""
        if self._rope is None or self._rope[0].shape[0] < end:
            size = max(end, 4096) if self._rope is None else max(end, 2 * self._rope[0].shape[0])
            size = min(size, max(end, self.args.max_seq_len))
            # normal tensors even when first built by an engine thread in inference mode: the
            # same model may train afterwards (GRPO samples with the weights it trains)
            with torch.inference_mode(False):
                cos, sin = rope_frequencies(self.args.head_dim, self.args.rope_theta, size)
                device = self.tok_embeddings.weight.device
                self._rope = (cos.to(device), sin.to(device))
        return self._rope

    def image_features(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Images (C, H, W) → (image tokens, dim): encoder → norm → 2×2 merge → adapter."""
        x, grids = self.vision_encoder(images)
        if self.pre_mm_projector_norm is not None:
            x = self.pre_mm_projector_norm(x)
        if self.patch_merger is not None:
            x = self.patch_merger(x, grids)
        x = self.vision_language_adapter(x)
        if self.args.vision is not None and self.args.vision.column_tokens:
            # Each image's tokens centred: what all its tokens share is removed, so the features
            # cannot collapse to a constant the decoder learns to ignore (it did, without this).
            x = torch.cat([t - t.mean(0, keepdim=True) for t in x.split([w for _, w in grids])])
        return x

    def embed(self, tokens: torch.Tensor, images: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens (B, T) → (B, T, dim); each [IMG] position takes the next image feature."""
        h = self.tok_embeddings(tokens)
        if images:
            if self.args.vision is None:
                raise ValueError("this model has no vision encoder")
            features = self.image_features(images).to(h.dtype)
            positions = tokens == self.args.vision.image_token_id
            if int(positions.sum()) != features.shape[0]:
                raise ValueError(f"{int(positions.sum())} image tokens in the prompt but "
                                 f"{features.shape[0]} image features")
            h = h.masked_scatter(positions.unsqueeze(-1), features)
        return h

    def forward(self, tokens: torch.Tensor | None, start_pos: int = 0, cache: KVCache | None = None,
                last_only: bool = False, embeddings: torch.Tensor | None = None,
                hidden_only: bool = False) -> torch.Tensor | None:
        """tokens (B, T) — or their embeddings (B, T, dim) — at positions [start_pos, start_pos+T)
        → logits (B, T or 1, vocab). `hidden_only` skips the output head (prefill that only
        fills the cache). Decoding one token per row at different positions: `decode`."""
        h = self.tok_embeddings(tokens) if embeddings is None else embeddings
        seqlen = h.shape[1]
        cos, sin = self.rope_tables(start_pos + seqlen)
        cos = cos[start_pos:start_pos + seqlen].to(h.dtype)
        sin = sin[start_pos:start_pos + seqlen].to(h.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, start_pos, cache.layer(i) if cache is not None else None)
        if hidden_only:
            return None
        if last_only:
            h = h[:, -1:]
        return self.output(self.norm(h)).float()

    def decode(self, tokens: torch.Tensor, cache: DecodeView,
               block: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        """One new token per row, tokens (B,), each at its own position (`cache.positions`)
        → fp32 logits (B, vocab). `block`: runs each TransformerBlock (block(layer, h, cos, sin,
        0, layer_kv)); engine/compiled.py passes a compiled one, the same for every layer."""
        cos, sin = self.rope_tables(cache.length)
        h = self.tok_embeddings(tokens)[:, None]  # (B, 1, dim)
        cos = cos[cache.positions][:, None, None, :].to(h.dtype)  # (B, 1, 1, D): a position per row
        sin = sin[cache.positions][:, None, None, :].to(h.dtype)
        for i, layer in enumerate(self.layers):
            h = (block or TransformerBlock.__call__)(layer, h, cos, sin, 0, cache.layer(i))
        return self.output(self.norm(h[:, 0])).float()
