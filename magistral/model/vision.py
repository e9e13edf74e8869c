"""Pixtral-style vision encoder (native resolution, 2D RoPE) and the adapter into the decoder.

Images of different sizes are encoded in one sequence of patches; attention runs image by image,
so each image's patches attend only to each other.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from magistral.config import VisionArgs
from magistral.model.layers import RMSNorm
from magistral.model.rope import apply_rope

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


def rope_2d(args: VisionArgs, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (N, head_dim) for patches at (row, col): even frequencies turn with the row,
    odd ones with the column, laid out for rotate-half."""
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.cat([rows[:, None].float() * inv_freq[0::2], cols[:, None].float() * inv_freq[1::2]], -1)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


class VisionAttention(nn.Module):
    def __init__(self, args: VisionArgs):
        super().__init__()
        self.n_heads, self.head_dim = args.num_attention_heads, args.head_dim
        self.wq = nn.Linear(args.hidden_size, args.hidden_size, bias=False)
        self.wk = nn.Linear(args.hidden_size, args.hidden_size, bias=False)
        self.wv = nn.Linear(args.hidden_size, args.hidden_size, bias=False)
        self.wo = nn.Linear(args.hidden_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lengths: list[int]
                ) -> torch.Tensor:
        """x: (N patches, hidden), the images' patches one after another (`lengths`): each image
        attends to its own patches only, one attention per image — the same result as a block-
        diagonal mask over all N, at Σ n² instead of N² cost (4× faster with 8 images)."""
        n = x.shape[0]
        q = self.wq(x).view(n, self.n_heads, self.head_dim).transpose(0, 1)
        k = self.wk(x).view(n, self.n_heads, self.head_dim).transpose(0, 1)
        v = self.wv(x).view(n, self.n_heads, self.head_dim).transpose(0, 1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = torch.cat([F.scaled_dot_product_attention(qi, ki, vi) for qi, ki, vi in
                         zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1), strict=True)], 1)
        return self.wo(out.transpose(0, 1).reshape(n, -1))


class VisionFeedForward(nn.Module):
    def __init__(self, args: VisionArgs):
        super().__init__()
        self.act = ACTIVATIONS[args.hidden_act]
        self.w1 = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.w2 = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)
        self.w3 = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class VisionBlock(nn.Module):
    def __init__(self, args: VisionArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.hidden_size, 1e-5)
        self.attention = VisionAttention(args)
        self.ffn_norm = RMSNorm(args.hidden_size, 1e-5)
        self.feed_forward = VisionFeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lengths: list[int]
                ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, lengths)
        return h + self.feed_forward(self.ffn_norm(h))


class VisionTransformer(nn.Module):
    def __init__(self, args: VisionArgs):
        super().__init__()
        self.layers = nn.ModuleList(VisionBlock(args) for _ in range(args.num_hidden_layers))


class VisionEncoder(nn.Module):
    def __init__(self, args: VisionArgs):
        super().__init__()
        self.args = args
        if args.patch_stem:
            self.patch_stem = patch_stem(args)
        else:
            self.patch_conv = nn.Conv2d(args.num_channels, args.hidden_size, kernel_size=args.patch_size,
                                        stride=args.patch_size, bias=False)
        if args.absolute_positions:
            self.row_embedding = nn.Embedding(args.absolute_positions, args.hidden_size)
            self.col_embedding = nn.Embedding(args.absolute_positions, args.hidden_size)
        self.ln_pre = RMSNorm(args.hidden_size, 1e-5)
        self.transformer = VisionTransformer(args)

    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """images: each (C, H, W), sides multiples of the patch size → (N patches, hidden) and
        each image's (rows, cols) patch grid."""
        grids, patches, rows, cols = [], [], [], []
        embed_patches = self.patch_stem if self.args.patch_stem else self.patch_conv
        dtype = next(embed_patches.parameters()).dtype
        for image in images:
            embed = embed_patches(image.unsqueeze(0).to(dtype))[0]  # (D, h, w)
            h, w = embed.shape[1:]
            grids.append((h, w))
            patches.append(embed.flatten(1).T)
            r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            rows.append(r.flatten())
            cols.append(c.flatten())
        x = torch.cat(patches)
        row_ids, col_ids = torch.cat(rows), torch.cat(cols)
        if self.args.absolute_positions:
            x = x + self.row_embedding(row_ids.to(x.device)) + self.col_embedding(col_ids.to(x.device))
        x = self.ln_pre(x)
        cos, sin = rope_2d(self.args, row_ids, col_ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 serving weights: keep q/k/v one dtype
        lengths = [h * w for h, w in grids]
        for layer in self.transformer.layers:
            x = layer(x, cos, sin, lengths)
        return x, grids


STEM_GROUPS = 8


def patch_stem(args: VisionArgs) -> nn.Sequential:
    """log2(patch_size) 3×3 stride-2 convolutions, widening to hidden_size: one output per patch."""
    depth = args.patch_size.bit_length() - 1
    if 2 ** depth != args.patch_size:
        raise ValueError(f"a patch stem needs a power-of-two patch size, not {args.patch_size}")
    widths = [args.num_channels] + [args.hidden_size >> (depth - 1 - i) for i in range(depth)]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1, bias=i < depth - 1))
        if args.patch_stem_norm:
            layers.append(nn.GroupNorm(STEM_GROUPS, b))
        if i < depth - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class PatchMerger(nn.Module):
    """Concatenates each 2×2 (merge × merge) block of patch features and projects it back."""

    def __init__(self, args: VisionArgs):
        super().__init__()
        self.merge = args.spatial_merge_size
        self.merging_layer = nn.Linear(args.hidden_size * self.merge ** 2, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        merged = []
        for feats, (h, w) in zip(x.split([h * w for h, w in grids]), grids, strict=True):
            grid = feats.view(h, w, -1).permute(2, 0, 1).unsqueeze(0)  # (1, D, h, w)
            blocks = F.unfold(grid, kernel_size=self.merge, stride=self.merge)  # (1, D·m², L)
            merged.append(blocks[0].T)
        return self.merging_layer(torch.cat(merged))


class ColumnMerger(nn.Module):
    """Concatenates each column of patch features, top to bottom, and projects it to one token."""

    def __init__(self, args: VisionArgs):
        super().__init__()
        if args.fixed_image_size is None:
            raise ValueError("column tokens need a fixed image size: a column's length is fixed")
        rows = args.fixed_image_size[0] // args.patch_size
        self.merging_layer = nn.Linear(args.hidden_size * rows, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        columns = [feats.view(h, w, -1).transpose(0, 1).reshape(w, -1)
                   for feats, (h, w) in zip(x.split([h * w for h, w in grids]), grids, strict=True)]
        return self.merging_layer(torch.cat(columns))


class VisionLanguageAdapter(nn.Module):
    def __init__(self, args: VisionArgs, dim: int):
        super().__init__()
        self.w_in = nn.Linear(args.hidden_size, dim, bias=args.adapter_bias)
        self.act = ACTIVATIONS[args.adapter_act]
        self.w_out = nn.Linear(dim, dim, bias=args.adapter_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(self.act(self.w_in(x)))
