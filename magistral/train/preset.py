"""magistral-mini: our architecture at the size this CPU can train — a top-2 MoE decoder and a
Pixtral-style encoder (2D RoPE over 8-pixel patches) over a truncated tekken vocabulary with
[THINK] tokens. Three additions of our own make a chart readable at this size: a CNN patch stem
and learned row/column embeddings (a bar's height is an absolute position), every image stretched
to 128×192, and one token per patch column instead of the 2×2 merger (24 tokens an image; a bar
becomes a run of columns read left to right). With the 2×2 merger over aspect-preserving images
(mini-1, mini-2) the decoder never learned to use the image: the loss with blank images equalled
the loss with the real ones after 1,600 steps."""

from __future__ import annotations

from magistral.config import ModelArgs, MoeArgs, VisionArgs

TOKENIZER_RANKS = 2048  # + 1000 special tokens: 3048 rows in the embedding
IMAGE = {"image_patch_size": 8, "max_image_size": 192, "spatial_merge_size": 1}
IMAGE_SIZE = (128, 192)  # (height, width) every image is stretched to
IMG, IMG_BREAK, IMG_END = 10, 12, 13  # tekken's special ranks


def magistral_mini_args(**overrides: object) -> ModelArgs:
    vision = VisionArgs(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                        patch_size=IMAGE["image_patch_size"], image_size=IMAGE["max_image_size"],
                        image_token_id=IMG, image_break_token_id=IMG_BREAK, image_end_token_id=IMG_END,
                        spatial_merge_size=IMAGE["spatial_merge_size"], adapter_norm=True, adapter_bias=False,
                        patch_stem=True, patch_stem_norm=True,
                        absolute_positions=max(IMAGE_SIZE) // IMAGE["image_patch_size"],
                        fixed_image_size=IMAGE_SIZE, column_tokens=True)
    args = dict(dim=192, n_layers=4, head_dim=48, hidden_dim=384, n_heads=4, n_kv_heads=2,
                vocab_size=1000 + TOKENIZER_RANKS, rope_theta=10000.0, max_seq_len=4096,
                tied_embeddings=True, moe=MoeArgs(num_experts=4, num_experts_per_tok=2), vision=vision)
    args.update(overrides)
    return ModelArgs(**args)  # type: ignore[arg-type]
