"""Mistral-family checkpoints in Hugging Face format (config.json + model*.safetensors: Mistral,
Mixtral, Llama, Pixtral/Llava, Mistral3) and Mistral's own format (params.json +
consolidated*.safetensors), mapped onto our parameter names (which are Mistral's).

Published repos (Magistral Small 1.2, Mistral Small 3.2, Devstral Small 1.1) ship both forms side
by side, each possibly sharded with an index; `load_checkpoint` reads one of them tensor by
tensor. Config fields we do not read are ignored; fields that would change the model's maths in a
way we do not implement (RoPE scaling, quantised weights, MLA, ...) are refused by name.
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch

from magistral.config import ModelArgs, MoeArgs, VisionArgs
from magistral.model.load_common import LazyTensor, assemble, permute_qk, unpermute_qk
from magistral.model.safetensors_io import TensorRef, index_files, save_sharded, shard_files
from magistral.model.transformer import Transformer

log = logging.getLogger("magistral.checkpoints")

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

# params.json fields that change the maths in ways we do not implement (names as vLLM and
# transformers' native-config parser read them); a null or empty value is harmless
_PARAMS_UNSUPPORTED = {
    "yarn": "YaRN RoPE scaling", "llama_4_scaling": "Llama 4 attention scaling",
    "quantization": "quantised weights", "quantization_config": "quantised weights",
    "q_lora_rank": "multi-head latent attention", "kv_lora_rank": "multi-head latent attention",
    "lora": "LoRA adapters",
}
_PARAMS_READ = {"dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size",
                "norm_eps", "rope_theta", "max_seq_len", "max_position_embeddings", "tied_embeddings",
                "moe", "vision_encoder", "multimodal", "sliding_window", "_sliding_window", "model_type",
                "activation", "hidden_act", "rope_scaling", "rope_parameters", *_PARAMS_UNSUPPORTED}
# moe fields of other MoE designs (shared experts, dense first layers, grouped routing)
_MOE_PLAIN = {"num_shared_experts": 0, "first_k_dense_replace": 0, "route_every_n": 1,
              "routed_scale": 1.0, "num_expert_groups": 1, "num_expert_groups_per_tok": 1}


def _rope_theta(cfg: dict[str, Any], default: float, plain: tuple[str, ...] = ("default",)) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or params.get("rope_type", "default")
    if kind not in (*plain, None):
        raise ValueError(f"RoPE scaling {kind!r} is not supported (plain RoPE only; use θ up to 1e9)")
    return float(cfg.get("rope_theta") or params.get("rope_theta") or default)


def _context(max_seq_len: int, sliding_window: Any) -> int:
    """Sliding-window attention equals full attention up to the window, so a model with one is
    served with its context capped at the window (the smallest, if layers differ)."""
    windows = [w for w in (sliding_window if isinstance(sliding_window, list) else [sliding_window])
               if w is not None]
    window = min(int(w) for w in windows) if windows else None
    if window is not None and window < max_seq_len:
        log.info("sliding-window attention (%d tokens): context capped at %d (full attention to there)",
                 window, window)
        return window
    return max_seq_len


def text_args_from_hf(cfg: dict[str, Any]) -> ModelArgs:
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError("checkpoints with attention or MLP biases are not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU, silu, only)")
    heads = cfg["num_attention_heads"]
    moe = None
    if cfg.get("num_local_experts"):
        moe = MoeArgs(num_experts=cfg["num_local_experts"], num_experts_per_tok=cfg["num_experts_per_tok"])
    max_seq_len = cfg.get("max_position_embeddings", 32768)
    return ModelArgs(
        dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, hidden_dim=cfg["intermediate_size"],
        n_heads=heads, n_kv_heads=cfg.get("num_key_value_heads") or heads, vocab_size=cfg["vocab_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=_rope_theta(cfg, 10000.0),
        max_seq_len=_context(max_seq_len, cfg.get("sliding_window")),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), moe=moe)


def vision_args_from_hf(vcfg: dict[str, Any], top: dict[str, Any]) -> VisionArgs:
    image_token = top.get("image_token_index", top.get("image_token_id", 10))
    is_mistral3 = top.get("model_type") == "mistral3"
    if top.get("vision_feature_layer", -1) != -1:
        raise ValueError("only vision_feature_layer -1 is supported")
    if vcfg.get("head_dim") not in (None, vcfg["hidden_size"] // vcfg["num_attention_heads"]):
        raise ValueError(f"vision head_dim {vcfg['head_dim']} is not hidden_size / num_attention_heads")
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
    for part in (cfg, cfg.get("text_config") or {}):
        if part.get("quantization_config"):
            method = part["quantization_config"].get("quant_method", "?")
            raise ValueError(f"quantised checkpoints ({method}) are not supported: use the bf16 release")
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


def _unsupported(source: str, field: str, why: str) -> ValueError:
    return ValueError(f"{source}: {field} ({why}) is not supported")


def _vision_from_params(vision: dict[str, Any], source: str) -> VisionArgs:
    """`vision_encoder` of params.json (mistral-inference's VisionEncoderArgs, plus the token ids
    and `max_image_size` Mistral publishes, plus our own hidden_act/adapter_act/adapter_norm)."""
    projector = vision.get("mm_projector_id")
    merge = vision.get("spatial_merge_size", 1)
    if projector not in (None, "", "patch_merge", "column_merge"):
        raise _unsupported(source, f"vision_encoder.mm_projector_id {projector!r}",
                           "only patch_merge (and our column_merge)")
    if projector == "patch_merge" and merge < 2:
        raise ValueError(f"{source}: mm_projector_id patch_merge needs spatial_merge_size ≥ 2, not {merge}")
    if projector in ("", "column_merge"):  # mistral-inference builds the merger only when asked by name
        merge = 1
    fixed = vision.get("fixed_image_size")
    if projector == "column_merge" and not fixed:
        raise ValueError(f"{source}: mm_projector_id column_merge needs fixed_image_size [height, width]")
    return VisionArgs(
        hidden_size=vision["hidden_size"], num_hidden_layers=vision["num_hidden_layers"],
        num_attention_heads=vision["num_attention_heads"], intermediate_size=vision["intermediate_size"],
        patch_size=vision["patch_size"], image_size=vision.get("image_size") or vision["max_image_size"],
        image_token_id=vision.get("image_token_id", 10),
        image_break_token_id=vision.get("image_break_token_id", 12),
        image_end_token_id=vision.get("image_end_token_id", 13), num_channels=vision.get("num_channels", 3),
        rope_theta=vision.get("rope_theta", 10000.0), hidden_act=vision.get("hidden_act", "silu"),
        spatial_merge_size=merge,
        adapter_norm=bool(vision.get("add_pre_mm_projector_layer_norm", vision.get("adapter_norm", False))),
        adapter_bias=vision.get("adapter_bias", True), adapter_act=vision.get("adapter_act", "gelu"),
        patch_stem=bool(vision.get("patch_stem", False)),
        patch_stem_norm=bool(vision.get("patch_stem_norm", False)),
        absolute_positions=vision.get("absolute_positions", 0),
        fixed_image_size=(int(fixed[0]), int(fixed[1])) if fixed else None,
        column_tokens=projector == "column_merge")


def args_from_params(params: dict[str, Any], source: str = "params.json") -> ModelArgs:
    """A params.json as Mistral publishes it (mistral-inference's TransformerArgs and the fields
    vLLM and transformers read from it) → our args."""
    for field, why in _PARAMS_UNSUPPORTED.items():
        if params.get(field):
            raise _unsupported(source, f"field {field!r}", why)
    if params.get("model_type", "transformer") != "transformer":
        raise _unsupported(source, f"model_type {params['model_type']!r}", "transformer only")
    activation = params.get("activation") or params.get("hidden_act") or "silu"
    if activation != "silu":
        raise _unsupported(source, f"activation {activation!r}", "SwiGLU, silu, only")
    multimodal = params.get("multimodal") or {}
    if multimodal.get("whisper_model_args"):
        raise _unsupported(source, "multimodal.whisper_model_args", "audio encoders")
    if ignored := sorted(params.keys() - _PARAMS_READ):
        log.info("%s: ignoring fields %s", source, ", ".join(ignored))
    moe = params.get("moe")
    if moe:
        for field, plain in _MOE_PLAIN.items():
            if moe.get(field, plain) not in (plain, None):
                raise _unsupported(source, f"moe.{field} {moe[field]}", f"Mixtral-style MoE only, {plain}")
        if moe.get("expert_hidden_dim", params["hidden_dim"]) != params["hidden_dim"]:
            raise _unsupported(source, "moe.expert_hidden_dim", "experts as wide as hidden_dim only")
    max_seq_len = params.get("max_seq_len") or params.get("max_position_embeddings") or 32768
    args = ModelArgs(
        dim=params["dim"], n_layers=params["n_layers"], head_dim=params.get("head_dim")
        or params["dim"] // params["n_heads"], hidden_dim=params["hidden_dim"], n_heads=params["n_heads"],
        n_kv_heads=params.get("n_kv_heads") or params["n_heads"], vocab_size=params["vocab_size"],
        norm_eps=params.get("norm_eps", 1e-5), rope_theta=_rope_theta(params, 1e6),
        max_seq_len=_context(max_seq_len, params.get("sliding_window") or params.get("_sliding_window")),
        tied_embeddings=bool(params.get("tied_embeddings", False)),
        moe=MoeArgs(moe["num_experts"], moe["num_experts_per_tok"]) if moe else None)
    vision = params.get("vision_encoder") or multimodal.get("vision_encoder_args")
    if vision:
        args.vision = _vision_from_params(vision, source)
    return args


def params_from_args(args: ModelArgs) -> dict[str, Any]:
    """The params.json that describes args (inverse of args_from_params), in Mistral's field
    names plus our vision activations."""
    params: dict[str, Any] = {k: getattr(args, k) for k in (
        "dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size", "norm_eps",
        "rope_theta", "max_seq_len", "tied_embeddings")}
    if args.moe:
        params["moe"] = {"num_experts": args.moe.num_experts,
                         "num_experts_per_tok": args.moe.num_experts_per_tok}
    if (v := args.vision) is not None:
        params["vision_encoder"] = {
            "hidden_size": v.hidden_size, "num_channels": v.num_channels, "image_size": v.image_size,
            "max_image_size": v.image_size, "patch_size": v.patch_size, "rope_theta": v.rope_theta,
            "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads, "adapter_bias": v.adapter_bias,
            "mm_projector_id": "column_merge" if v.column_tokens
            else "patch_merge" if v.spatial_merge_size > 1 else "",
            "spatial_merge_size": v.spatial_merge_size, "add_pre_mm_projector_layer_norm": v.adapter_norm,
            "image_token_id": v.image_token_id, "image_break_token_id": v.image_break_token_id,
            "image_end_token_id": v.image_end_token_id, "hidden_act": v.hidden_act,
            "adapter_act": v.adapter_act}
        if v.patch_stem:
            params["vision_encoder"]["patch_stem"] = True
        if v.patch_stem_norm:
            params["vision_encoder"]["patch_stem_norm"] = True
        if v.absolute_positions:
            params["vision_encoder"]["absolute_positions"] = v.absolute_positions
        if v.fixed_image_size:
            params["vision_encoder"]["fixed_image_size"] = list(v.fixed_image_size)
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


def _unpermuted(ref: TensorRef, heads: int) -> torch.Tensor:
    return unpermute_qk(ref.load(), heads)


def _stacked(refs: list[TensorRef]) -> torch.Tensor:
    return torch.stack([ref.load() for ref in refs])


def _lazy_tensors(refs: dict[str, TensorRef], rename: Any, qk_heads: Any) -> dict[str, LazyTensor]:
    """Checkpoint tensors → ours, unread: renamed, q/k to rotate-half where `qk_heads` says,
    per-expert weights (…experts.E.w1.weight) stacked into (E, out, in)."""
    out: dict[str, LazyTensor] = {}
    experts: dict[str, dict[int, TensorRef]] = {}
    for key, ref in refs.items():
        if (name := rename(key)) is None:
            continue
        if name in out:
            raise ValueError(f"two checkpoint tensors map to {name} (the second is {key})")
        if m := _EXPERT_KEY.match(name):
            experts.setdefault(f"{m[1]}.{m[3]}", {})[int(m[2])] = ref
            continue
        heads = qk_heads(name)
        out[name] = LazyTensor(ref.shape, ref.load if heads is None else partial(_unpermuted, ref, heads))
    for name, by_index in experts.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{name}: experts {sorted(by_index)} are not numbered 0..{len(by_index) - 1}")
        parts = [by_index[i] for i in range(len(by_index))]
        out[name] = LazyTensor((len(parts), *parts[0].shape), partial(_stacked, parts))
    return out


def _hf_files(folder: Path) -> list[Path]:
    # transformers names shards model*.safetensors; older exports used other names
    return shard_files(folder, "model") or sorted(
        p for p in folder.glob("*.safetensors") if not p.name.startswith("consolidated"))


def _complete(files: Any) -> bool:
    try:
        return bool(files())
    except FileNotFoundError:  # an index whose shards are not all there
        return False


def detect_layout(folder: Path) -> str:
    """"hf" (config.json + model shards) when complete, else "consolidated" (params.json +
    consolidated shards). Published repos often have both, holding the same weights, and a
    download of one form usually brings the other's small json files along."""
    has_config, has_params = (folder / "config.json").is_file(), (folder / "params.json").is_file()
    if has_config and _complete(partial(_hf_files, folder)):
        return "hf"
    if has_params and _complete(partial(shard_files, folder, "consolidated")):
        return "consolidated"
    if has_config or has_params:  # let that form's loader say what is missing
        return "hf" if has_config else "consolidated"
    raise FileNotFoundError(f"{folder}: no checkpoint found (config.json with model*.safetensors, or "
                            "params.json with consolidated*.safetensors)")


def checkpoint_tensors(folder: Path, layout: str = "auto"
                       ) -> tuple[ModelArgs, dict[str, Any], dict[str, LazyTensor]]:
    """(args, the config file's contents, our tensors, unread) of the checkpoint in `folder`."""
    layout = detect_layout(folder) if layout == "auto" else layout
    if layout == "hf":
        config = json.loads((folder / "config.json").read_text())
        args = args_from_hf_config(config)
        return args, config, _lazy_tensors(index_files(_hf_files(folder)), hf_key, lambda name: None)
    if layout == "consolidated":
        config = json.loads((folder / "params.json").read_text())
        args = args_from_params(config, source=str(folder / "params.json"))
        files = shard_files(folder, "consolidated")
        if not files:
            raise FileNotFoundError(f"{folder}: no consolidated*.safetensors")
        return args, config, _lazy_tensors(index_files(files), lambda key: key,
                                           partial(_qk_heads, args=args))
    raise ValueError(f"unknown checkpoint layout {layout!r} (auto, hf, consolidated)")


def load_checkpoint(folder: Path, quantize: str = "none", dtype: torch.dtype = torch.float32,
                    layout: str = "auto") -> tuple[Transformer, dict[str, Any]]:
    """A checkpoint folder of either format → (model, its config). Tensors are read one decoder
    block at a time and, with `quantize` bf16 or int4, turned into serving weights as they come,
    so peak memory stays near the serving size (model/load_common.assemble)."""
    args, config, tensors = checkpoint_tensors(folder, layout)
    return assemble(args, tensors, quantize, dtype, source=str(folder)), config


def load_hf(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict[str, Any]]:
    return load_checkpoint(folder, dtype=dtype, layout="hf")


def load_consolidated(folder: Path, dtype: torch.dtype = torch.float32
                      ) -> tuple[Transformer, dict[str, Any]]:
    return load_checkpoint(folder, dtype=dtype, layout="consolidated")


def to_consolidated(model: Transformer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Our model → (params.json, consolidated tensors): q/k back in interleaved layout, experts
    one by one, as Mistral publishes them."""
    args = model.args
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if args.tied_embeddings and key == "output.weight":
            continue
        if (heads := _qk_heads(key, args)) is not None:
            tensor = permute_qk(tensor, heads)
        if args.moe and re.search(r"feed_forward\.w[123]$", key):
            for e in range(tensor.shape[0]):
                tensors[f"{key.rsplit('.', 1)[0]}.experts.{e}.{key.rsplit('.', 1)[1]}.weight"] = tensor[e]
            continue
        tensors[key] = tensor.contiguous()
    return params_from_args(args), tensors


def save_consolidated(model: Transformer, folder: Path, max_shard_bytes: int | None = None) -> Path:
    """Write `model` in Mistral's format: params.json + consolidated.safetensors (or, past
    `max_shard_bytes`, consolidated-0000N-of-0000M shards with their index)."""
    params, tensors = to_consolidated(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    save_sharded(tensors, folder, "consolidated", max_shard_bytes)
    return folder
