"""Model hyperparameters as small dataclasses composed of optional parts (mistral-inference style)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MoeArgs:
    num_experts: int
    num_experts_per_tok: int


@dataclass
class VisionArgs:
    """A Pixtral-style encoder plus the adapter that maps its patches into the decoder."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int  # the maximum side in pixels; larger images are downscaled
    image_token_id: int
    image_break_token_id: int
    image_end_token_id: int
    num_channels: int = 3
    rope_theta: float = 10000.0
    hidden_act: str = "silu"  # activation of the encoder's gated feed-forward
    spatial_merge_size: int = 1  # 2: a learned 2×2 patch merger (Mistral 3), 1: none (Pixtral)
    adapter_norm: bool = False  # RMSNorm before the merger (Mistral 3)
    adapter_bias: bool = True
    adapter_act: str = "gelu"
    # Additions of our own for models trained from scratch on this CPU (magistral-mini); off in
    # every published checkpoint. A small CNN (3×3 stride-2 convolutions) instead of one patch
    # projection sees edges inside a patch; learned row/column embeddings (up to this many patches
    # a side) make absolute positions — a bar's height — as easy to read as relative ones.
    patch_stem: bool = False
    # GroupNorm after each stem convolution, statistics over one image's pixels: what is the same
    # everywhere in an image is removed, so the encoder cannot collapse to a constant "an image is
    # here" feature that the decoder learns to ignore (what mini-2's encoder did). Per image, so a
    # row's result does not depend on its batch.
    patch_stem_norm: bool = False
    absolute_positions: int = 0
    # Every image stretched to (height, width), whatever its size and aspect: a chart's value axis
    # then spans the same patch rows in every image.
    fixed_image_size: tuple[int, int] | None = None
    # One token per column of patches (the column's patches concatenated and projected) instead of
    # the 2×2 merger: a vertical bar, its top and its label become one token, read left to right.
    # Needs fixed_image_size (a column's length is part of the projection). An image's column
    # tokens are centred (their mean removed) after the adapter.
    column_tokens: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class ModelArgs:
    """A Llama/Mistral-family decoder. Names follow Mistral's `params.json`."""

    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 1e6
    max_seq_len: int = 32768
    tied_embeddings: bool = False
    moe: MoeArgs | None = None
    vision: VisionArgs | None = None


def tiny_args(**overrides: object) -> ModelArgs:
    """A few-thousand-parameter config for fast invariant tests."""
    args = dict(
        dim=64, n_layers=2, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2,
        vocab_size=256, rope_theta=10000.0, max_seq_len=512,
    )
    args.update(overrides)
    return ModelArgs(**args)  # type: ignore[arg-type]


def tiny_moe_args(**overrides: object) -> ModelArgs:
    return tiny_args(moe=MoeArgs(num_experts=4, num_experts_per_tok=2), **overrides)


def tiny_vision_args(**overrides: object) -> ModelArgs:
    vision = VisionArgs(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, patch_size=4, image_size=64, image_token_id=10,
                        image_break_token_id=12, image_end_token_id=13, spatial_merge_size=2,
                        adapter_norm=True, adapter_bias=False)
    return tiny_args(vision=vision, **overrides)


def magistral_medium_args() -> ModelArgs:
    """The release's shape: a ~45B mixture-of-experts decoder (8 experts, 2 active) with a
    Pixtral-style vision encoder, 128k context (RoPE θ 1e9) and the 131072-token tekken vocabulary."""
    vision = VisionArgs(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, patch_size=14, image_size=1540, image_token_id=10,
                        image_break_token_id=12, image_end_token_id=13, spatial_merge_size=2,
                        adapter_norm=True, adapter_bias=False)
    return ModelArgs(dim=4096, n_layers=32, head_dim=128, hidden_dim=13312, n_heads=32, n_kv_heads=8,
                     vocab_size=131072, rope_theta=1e9, max_seq_len=131072,
                     moe=MoeArgs(num_experts=8, num_experts_per_tok=2), vision=vision)


PRESETS = {"magistral-medium-1.2": magistral_medium_args, "tiny": tiny_args,
           "tiny-moe": tiny_moe_args, "tiny-vision": tiny_vision_args}
