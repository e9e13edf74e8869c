"""Mistral-family checkpoints in Hugging Face format (config.json + safetensors: Mistral, Mixtral,
Llama, Pixtral/Llava, Mistral3) and Mistral's own format (params.json + consolidated.safetensors),
mapped onto our parameter names (which are Mistral's)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from magistral.config import ModelArgs, MoeArgs, VisionArgs
from magistral.model.load_common import build_model, permute_qk, unpermute_qk
from magistral.model.safetensors_io import open_checkpoint_files
from magistral.model.transformer import Transformer

_HF_TEXT = [  # (pattern, replacement) on keys with the language-model prefix removed
    (r"^embed_tokens\.", "tok_embeddings."),
    (r"^lm_head\.", "output."),
    (r"^layers\.(\d+)\.self_attn\.([qkvo])_proj\.", r"layers.\1.attention.w\2."),
    (r"^layers\.(\d+)\.mlp\.gate_proj\.", r"layers.\1.feed_forward.w1."),
    (r"^layers\.(\d+)\.mlp\.down_proj\.", r"layers.\1.feed_forward.w2."),
    (r"^layers\.(\d+)\.mlp\.up_proj\.", r"layers.\1.feed_forward.w3."),
    (r"^layers\.(\d+)\.input_layernorm\.", r"layers.\1.attention_norm."),
    (r"^layers\.(\d+)\.post_attention_layernorm\.", r"layers.\1.ffn_norm."),
    (r"^layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.", r"layers.\1.feed_forward.gate."),
    (r"^layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight",
     r"layers.\1.feed_forward.experts.\2.\3.weight"),
]
_HF_VISION = [
    (r"^(?:model\.)?vision_tower\.", "vision_encoder."),
    (r"\.attention\.([qkvo])_proj\.", r".attention.w\1."),
    (r"\.feed_forward\.gate_proj\.", ".feed_forward.w1."),
    (r"\.feed_forward\.down_proj\.", ".feed_forward.w2."),
    (r"\.feed_forward\.up_proj\.", ".feed_forward.w3."),
    (r"^(?:model\.)?multi_modal_projector\.norm\.", "pre_mm_projector_norm."),
    (r"^(?:model\.)?multi_modal_projector\.patch_merger\.", "patch_merger."),
    (r"^(?:model\.)?multi_modal_projector\.linear_1\.", "vision_language_adapter.w_in."),
    (r"^(?:model\.)?multi_modal_projector\.linear_2\.", "vision_language_adapter.w_out."),
]
_EXPERT_KEY = re.compile(r"^(layers\.\d+\.feed_forward)\.experts\.(\d+)\.(w[123])\.weight$")


def _rope_theta(cfg: dict[str, Any], default: float, plain: tuple[str, ...] = ("default",)) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or params.get("rope_type", "default")
    if kind not in (*plain, None):
        raise ValueError(f"RoPE scaling {kind!r} is not supported (plain RoPE only; use θ up to 1e9)")
    return float(cfg.get("rope_theta") or params.get("rope_theta") or default)


def text_args_from_hf(cfg: dict[str, Any]) -> ModelArgs:
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError("checkpoints with attention or MLP biases are not supported")
    heads = cfg["num_attention_heads"]
    moe = None
    if cfg.get("num_local_experts"):
        moe = MoeArgs(num_experts=cfg["num_local_experts"], num_experts_per_tok=cfg["num_experts_per_tok"])
    return ModelArgs(
        dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, hidden_dim=cfg["intermediate_size"],
        n_heads=heads, n_kv_heads=cfg.get("num_key_value_heads") or heads, vocab_size=cfg["vocab_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=_rope_theta(cfg, 10000.0),
        max_seq_len=cfg.get("max_position_embeddings", 32768),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), moe=moe)


def vision_args_from_hf(vcfg: dict[str, Any], top: dict[str, Any]) -> VisionArgs:
    image_token = top.get("image_token_index", top.get("image_token_id", 10))
    is_mistral3 = top.get("model_type") == "mistral3"
    if top.get("vision_feature_layer", -1) != -1:
        raise ValueError("only vision_feature_layer -1 is supported")
    return VisionArgs(
        hidden_size=vcfg["hidden_size"], num_hidden_layers=vcfg["num_hidden_layers"],
        num_attention_heads=vcfg["num_attention_heads"], intermediate_size=vcfg["intermediate_size"],
        patch_size=vcfg["patch_size"], image_size=vcfg["image_size"], image_token_id=image_token,
        image_break_token_id=top.get("image_break_token_id", 12),
        image_end_token_id=top.get("image_end_token_id", 13), num_channels=vcfg.get("num_channels", 3),
        rope_theta=_rope_theta(vcfg, 10000.0, plain=("default", "axial")),
        hidden_act=vcfg.get("hidden_act", "gelu"),
        spatial_merge_size=top.get("spatial_merge_size", 1) if is_mistral3 else 1,
        adapter_norm=is_mistral3, adapter_bias=top.get("multimodal_projector_bias", not is_mistral3),
        adapter_act=top.get("projector_hidden_act", "gelu"))


def args_from_hf_config(cfg: dict[str, Any]) -> ModelArgs:
    model_type = cfg.get("model_type")
    if model_type in ("mistral3", "llava"):
        args = text_args_from_hf(cfg["text_config"])
        args.vision = vision_args_from_hf(cfg["vision_config"], cfg)
        if "tie_word_embeddings" in cfg["text_config"]:
            args.tied_embeddings = bool(cfg["text_config"]["tie_word_embeddings"])
        return args
    if model_type in ("mistral", "mixtral", "llama"):
        return text_args_from_hf(cfg)
    raise ValueError(f"unsupported model_type {model_type!r} (mistral, mixtral, llama, llava, mistral3)")


def hf_key(key: str) -> str | None:
    """A Hugging Face parameter name → ours (None for buffers we do not keep)."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    if "vision_tower." in key or "multi_modal_projector." in key:
        for pattern, repl in _HF_VISION:
            key = re.sub(pattern, repl, key)
        return key
    key = re.sub(r"^(?:model\.)?language_model\.", "", key)
    key = re.sub(r"^model\.", "", key)
    for pattern, repl in _HF_TEXT:
        key = re.sub(pattern, repl, key)
    return key


def stack_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert weights (…experts.E.w1.weight) → stacked (…w1) tensors of shape (E, out, in)."""
    grouped: dict[str, dict[int, torch.Tensor]] = {}
    out = {}
    for key, tensor in state.items():
        if m := _EXPERT_KEY.match(key):
            grouped.setdefault(f"{m[1]}.{m[3]}", {})[int(m[2])] = tensor
        else:
            out[key] = tensor
    for key, experts in grouped.items():
        out[key] = torch.stack([experts[i] for i in range(len(experts))])
    return out


def load_hf(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict[str, Any]]:
    cfg = json.loads((folder / "config.json").read_text())
    args = args_from_hf_config(cfg)
    state = {}
    for key, tensor in open_checkpoint_files(folder).items():
        if (name := hf_key(key)) is not None:
            state[name] = tensor
    return build_model(args, stack_experts(state), dtype, source=str(folder)), cfg


def args_from_params(params: dict[str, Any]) -> ModelArgs:
    moe = params.get("moe")
    vision = params.get("vision_encoder")
    args = ModelArgs(
        dim=params["dim"], n_layers=params["n_layers"], head_dim=params.get("head_dim")
        or params["dim"] // params["n_heads"], hidden_dim=params["hidden_dim"], n_heads=params["n_heads"],
        n_kv_heads=params.get("n_kv_heads", params["n_heads"]), vocab_size=params["vocab_size"],
        norm_eps=params.get("norm_eps", 1e-5), rope_theta=params.get("rope_theta", 1e6),
        max_seq_len=params.get("max_seq_len", params.get("max_position_embeddings", 32768)),
        tied_embeddings=params.get("tied_embeddings", False),
        moe=MoeArgs(moe["num_experts"], moe["num_experts_per_tok"]) if moe else None)
    if vision:
        args.vision = VisionArgs(
            hidden_size=vision["hidden_size"], num_hidden_layers=vision["num_hidden_layers"],
            num_attention_heads=vision["num_attention_heads"],
            intermediate_size=vision["intermediate_size"], patch_size=vision["patch_size"],
            image_size=vision["image_size"], image_token_id=vision["image_token_id"],
            image_break_token_id=vision["image_break_token_id"],
            image_end_token_id=vision["image_end_token_id"], num_channels=vision.get("num_channels", 3),
            rope_theta=vision.get("rope_theta", 10000.0), hidden_act=vision.get("hidden_act", "silu"),
            spatial_merge_size=vision.get("spatial_merge_size", 1),
            adapter_norm=vision.get("spatial_merge_size", 1) > 1 or vision.get("adapter_norm", False),
            adapter_bias=vision.get("adapter_bias", True), adapter_act=vision.get("adapter_act", "gelu"))
    return args


def params_from_args(args: ModelArgs) -> dict[str, Any]:
    """The params.json that describes args (inverse of args_from_params)."""
    params: dict[str, Any] = {k: getattr(args, k) for k in (
        "dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size", "norm_eps",
        "rope_theta", "max_seq_len", "tied_embeddings")}
    if args.moe:
        params["moe"] = {"num_experts": args.moe.num_experts,
                         "num_experts_per_tok": args.moe.num_experts_per_tok}
    if args.vision:
        params["vision_encoder"] = dict(args.vision.__dict__)
    return params


def _qk_heads(key: str, args: ModelArgs) -> int | None:
    """Heads of a q/k projection stored in Mistral's interleaved RoPE layout, else None."""
    if key.startswith("vision_encoder.") and re.search(r"\.attention\.w[qk]\.weight$", key):
        return args.vision.num_attention_heads if args.vision else None
    if key.endswith("attention.wq.weight"):
        return args.n_heads
    if key.endswith("attention.wk.weight"):
        return args.n_kv_heads
    return None


def load_consolidated(folder: Path, dtype: torch.dtype = torch.float32
                      ) -> tuple[Transformer, dict[str, Any]]:
    params = json.loads((folder / "params.json").read_text())
    args = args_from_params(params)
    state = {}
    for key, tensor in open_checkpoint_files(folder).items():
        heads = _qk_heads(key, args)
        state[key] = torch.from_numpy(unpermute_qk(tensor.float().numpy(), heads)) if heads else tensor
    return build_model(args, stack_experts(state), dtype, source=str(folder)), params


def to_consolidated(model: Transformer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Our model → (params.json, consolidated tensors): q/k back in interleaved layout, experts
    one by one, as Mistral publishes them."""
    args = model.args
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if args.tied_embeddings and key == "output.weight":
            continue
        if (heads := _qk_heads(key, args)) is not None:
            tensor = torch.from_numpy(permute_qk(tensor.numpy(), heads))
        if args.moe and re.search(r"feed_forward\.w[123]$", key):
            for e in range(tensor.shape[0]):
                tensors[f"{key.rsplit('.', 1)[0]}.experts.{e}.{key.rsplit('.', 1)[1]}.weight"] = tensor[e]
            continue
        tensors[key] = tensor.contiguous()
    return params_from_args(args), tensors


def save_consolidated(model: Transformer, folder: Path) -> Path:
    """Write `model` in Mistral's format: params.json + consolidated.safetensors."""
    from safetensors.torch import save_file

    params, tensors = to_consolidated(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    save_file(tensors, folder / "consolidated.safetensors")
    return folder
