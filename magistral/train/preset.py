"""magistral-mini: our architecture at the size this CPU can train — a top-2 MoE decoder and a
Pixtral-style encoder (2D RoPE, 2×2 patch merger; a CNN patch stem and learned row/column
embeddings, because bar heights are absolute positions) over a truncated tekken vocabulary with
[THINK] tokens."""

from __future__ import annotations

from magistral.config import ModelArgs, MoeArgs, VisionArgs

TOKENIZER_RANKS = 2048  # + 1000 special tokens: 3048 rows in the embedding
IMAGE = {"image_patch_size": 16, "max_image_size": 256, "spatial_merge_size": 2}
IMG, IMG_BREAK, IMG_END = 10, 12, 13  # tekken's special ranks


def magistral_mini_args(**overrides: object) -> ModelArgs:
    vision = VisionArgs(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                        patch_size=IMAGE["image_patch_size"], image_size=IMAGE["max_image_size"],
                        image_token_id=IMG, image_break_token_id=IMG_BREAK, image_end_token_id=IMG_END,
                        spatial_merge_size=IMAGE["spatial_merge_size"], adapter_norm=True, adapter_bias=False,
                        patch_stem=True,
                        absolute_positions=IMAGE["max_image_size"] // IMAGE["image_patch_size"])
    args = dict(dim=192, n_layers=4, head_dim=48, hidden_dim=384, n_heads=4, n_kv_heads=2,
                vocab_size=1000 + TOKENIZER_RANKS, rope_theta=10000.0, max_seq_len=4096,
                tied_embeddings=True, moe=MoeArgs(num_experts=4, num_experts_per_tok=2), vision=vision)
    args.update(overrides)
    return ModelArgs(**args)  # type: ignore[arg-type]
