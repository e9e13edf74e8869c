"""Checkpoints laid out as Mistral publishes them on Hugging Face, at toy sizes.

Magistral Small 1.2 (Magistral-Small-2509) and Mistral Small 3.2 (Mistral-Small-3.2-24B-Instruct-2506)
are Mistral3ForConditionalGeneration (Pixtral encoder, 2x2 patch merger, untied head, RoPE θ 1e9);
Devstral Small 1.1 (Devstral-Small-2507) is MistralForCausalLM. Each repo ships both forms side by side:
config.json + model-0000N-of-0000M.safetensors + model.safetensors.index.json (legacy Mistral3 key
names: language_model.model.*, vision_tower.*, multi_modal_projector.*), and params.json +
consolidated.safetensors (or consolidated-0000N-of-0000M shards + consolidated.safetensors.index.json)
in Mistral's names with q/k in interleaved RoPE order, plus tekken.json. The config dicts below copy the
published field sets (values scaled down); the consolidated tensors are written here by the reverse of
transformers' convert_mistral3_weights_to_hf.py mapping, independently of our loader. Every form must
load and give transformers' logits.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from magistral.chat.tekken import write_v13_tekken
from magistral.model.checkpoints import args_from_hf_config, args_from_params, load_checkpoint
from magistral.model.safetensors_io import TensorRef, save_sharded

transformers = pytest.importorskip("transformers")
TOL = 1e-4
VOCAB = 1000 + 1024  # write_v13_tekken(ranks=1024)
TINY_IMAGE = {"image_patch_size": 4, "max_image_size": 64, "spatial_merge_size": 2}

TEXT_CONFIG = {  # text_config of the published Mistral3 config.json (transformers 4.57), scaled down
    "attention_dropout": 0.0, "dtype": "bfloat16", "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 131072,
    "model_type": "mistral", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0, "sliding_window": None, "use_cache": True,
    "vocab_size": VOCAB}
VISION_CONFIG = {
    "attention_dropout": 0.0, "dtype": "bfloat16", "head_dim": 8, "hidden_act": "silu", "hidden_size": 32,
    "image_size": 64, "initializer_range": 0.02, "intermediate_size": 64, "model_type": "pixtral",
    "num_attention_heads": 4, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 4,
    "rope_theta": 10000.0}
MISTRAL3_CONFIG = {
    "architectures": ["Mistral3ForConditionalGeneration"], "dtype": "bfloat16", "image_token_index": 10,
    "model_type": "mistral3", "multimodal_projector_bias": False, "projector_hidden_act": "gelu",
    "spatial_merge_size": 2, "text_config": TEXT_CONFIG, "transformers_version": "4.57.1",
    "vision_config": VISION_CONFIG, "vision_feature_layer": -1}
DEVSTRAL_CONFIG = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "head_dim": 16, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 128, "max_position_embeddings": 131072, "model_type": "mistral",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-05,
    "rope_theta": 1000000000.0, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.53.1", "use_cache": True, "vocab_size": VOCAB}
TEXT_PARAMS = {  # params.json text fields (mistral-inference TransformerArgs, as vLLM reads them)
    "dim": 64, "n_layers": 2, "head_dim": 16, "hidden_dim": 128, "n_heads": 4, "n_kv_heads": 2,
    "rope_theta": 1000000000.0, "norm_eps": 1e-05, "vocab_size": VOCAB, "max_position_embeddings": 131072}
VISION_PARAMS = {  # params.json vision_encoder (mistral-inference VisionEncoderArgs + published extras)
    "hidden_size": 32, "num_channels": 3, "max_image_size": 64, "patch_size": 4, "rope_theta": 10000.0,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "adapter_bias": False,
    "mm_projector_id": "patch_merge", "spatial_merge_size": 2, "add_pre_mm_projector_layer_norm": True,
    "image_token_id": 10, "image_break_token_id": 12, "image_end_token_id": 13, "image_size": 64}
# (HF config.json, params.json, consolidated sharded?) per repo
CASES = {
    "Magistral-Small-2509": (MISTRAL3_CONFIG, {**TEXT_PARAMS, "vision_encoder": VISION_PARAMS}, False),
    "Mistral-Small-3.2-24B-Instruct-2506": (MISTRAL3_CONFIG, {**TEXT_PARAMS, "vision_encoder": VISION_PARAMS},
                                            True),
    "Devstral-Small-2507": (DEVSTRAL_CONFIG, TEXT_PARAMS, True),
}

# HF name → Mistral name: transformers' convert_mistral3_weights_to_hf.py mapping, reversed
TO_MISTRAL = [
    (r"^(?:language_model\.)?lm_head\.", "output."),
    (r"^(?:language_model\.)?model\.norm\.", "norm."),
    (r"^(?:language_model\.)?model\.embed_tokens\.", "tok_embeddings."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.input_layernorm\.", r"layers.\1.attention_norm."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.post_attention_layernorm\.", r"layers.\1.ffn_norm."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.self_attn\.(q|k|v|o)_proj\.", r"layers.\1.attention.w\2."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.mlp\.gate_proj\.", r"layers.\1.feed_forward.w1."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.mlp\.down_proj\.", r"layers.\1.feed_forward.w2."),
    (r"^(?:language_model\.)?model\.layers\.(\d+)\.mlp\.up_proj\.", r"layers.\1.feed_forward.w3."),
    (r"^vision_tower\.transformer\.layers\.(\d+)\.attention\.(q|k|v|o)_proj\.",
     r"vision_encoder.transformer.layers.\1.attention.w\2."),
    (r"^vision_tower\.transformer\.layers\.(\d+)\.feed_forward\.gate_proj\.",
     r"vision_encoder.transformer.layers.\1.feed_forward.w1."),
    (r"^vision_tower\.transformer\.layers\.(\d+)\.feed_forward\.down_proj\.",
     r"vision_encoder.transformer.layers.\1.feed_forward.w2."),
    (r"^vision_tower\.transformer\.layers\.(\d+)\.feed_forward\.up_proj\.",
     r"vision_encoder.transformer.layers.\1.feed_forward.w3."),
    (r"^vision_tower\.", "vision_encoder."),
    (r"^multi_modal_projector\.linear_1\.", "vision_language_adapter.w_in."),
    (r"^multi_modal_projector\.linear_2\.", "vision_language_adapter.w_out."),
    (r"^multi_modal_projector\.patch_merger\.", "patch_merger."),
    (r"^multi_modal_projector\.norm\.", "pre_mm_projector_norm."),
]


def reference_model(config: dict[str, Any]) -> Any:
    """transformers' model for a published config, with weights large enough to matter."""
    torch.manual_seed(0)
    config = json.loads(json.dumps(config).replace('"bfloat16"', '"float32"'))  # fp32 reference
    if config["model_type"] == "mistral3":
        cfg = transformers.Mistral3Config(**config)
        cfg.tie_word_embeddings = False  # the published weights carry their own lm_head
        model = transformers.Mistral3ForConditionalGeneration(cfg)
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**config))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if p.dim() == 1
                    else 0.08 * torch.randn(p.shape, generator=g))
    return model.eval()


def to_mistral(hf: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """HF tensors → consolidated ones: Mistral's names, q/k back to interleaved RoPE pairs."""
    text = config.get("text_config", config)
    vision = config.get("vision_config")
    out = {}
    for key, tensor in hf.items():
        name = key
        for pattern, repl in TO_MISTRAL:
            name, n = re.subn(pattern, repl, name)
            if n:
                break
        assert n, key
        heads = None
        if re.search(r"\.attention\.wq\.", name):
            heads = (vision if name.startswith("vision") else text)["num_attention_heads"]
        elif re.search(r"\.attention\.wk\.", name):
            heads = vision["num_attention_heads"] if name.startswith("vision") else \
                text["num_key_value_heads"]
        if heads:  # the inverse of transformers' permute_for_rope
            rows, cols = tensor.shape
            tensor = tensor.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)
        out[name] = tensor.contiguous()
    return out


def published_repo(name: str, folder: Path) -> Path:
    """Both forms of one repo's layout in `folder`, sharded as published."""
    from safetensors.torch import load_file

    config, params, consolidated_sharded = CASES[name]
    reference = reference_model(config)
    reference.save_pretrained(folder, max_shard_size="100KB")  # model-0000N-of-0000M + index
    assert (folder / "model.safetensors.index.json").is_file()
    (folder / "config.json").write_text(json.dumps({**config, "some_future_field": {"x": 1}}))
    hf = {}
    for path in folder.glob("model-*.safetensors"):
        hf.update(load_file(path))
    save_sharded(to_mistral(hf, config), folder, "consolidated", 150_000 if consolidated_sharded else None)
    (folder / "params.json").write_text(json.dumps(params))
    write_v13_tekken(folder / "tekken.json", image=TINY_IMAGE if "vision_encoder" in params else None,
                     ranks=1024)
    (folder / "SYSTEM_PROMPT.txt").write_text("You are a helpful assistant.")
    return folder


def subset(folder: Path, target: Path, keep: str) -> Path:
    """A copy (hard links) of the files whose names match `keep`: one form alone."""
    target.mkdir()
    for path in folder.iterdir():
        if re.match(keep, path.name):
            os.link(path, target / path.name)
    return target


def image_prompt() -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    images = [torch.randn(3, 16, 24, generator=g), torch.randn(3, 32, 8, generator=g)]
    layout = []  # 16x24 px → 2x3 merged tokens, 32x8 → 4x1: [IMG] rows, [IMG_BREAK], last [IMG_END]
    for rows, cols in [(2, 3), (4, 1)]:
        tokens = ([10] * cols + [12]) * rows
        tokens[-1] = 13
        layout += tokens + [50, 51]
    return torch.tensor([[1, 3, 40, 41, *layout, 42, 4]]), images


def transformers_logits(reference: Any, ids: torch.Tensor, images: list[torch.Tensor] | None) -> torch.Tensor:
    if not images:
        return reference(ids).logits
    padded = torch.stack([torch.nn.functional.pad(i, (0, 24 - i.shape[2], 0, 32 - i.shape[1]))
                          for i in images])
    return reference(input_ids=ids, pixel_values=padded,
                     image_sizes=torch.tensor([list(i.shape[1:]) for i in images])).logits


def our_logits(model: Any, ids: torch.Tensor, images: list[torch.Tensor] | None) -> torch.Tensor:
    return model(None, embeddings=model.embed(ids, images)) if images else model(ids)


@pytest.fixture(scope="module", params=list(CASES))
def repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, published_repo(request.param, tmp_path_factory.mktemp("repo") / request.param)


def test_both_forms_load_and_match_transformers(repo: tuple[str, Path], tmp_path: Path) -> None:
    name, folder = repo
    config, _, sharded = CASES[name]
    assert (folder / "consolidated.safetensors.index.json").is_file() == sharded
    hf_only = subset(folder, tmp_path / "hf", r"config\.json|model.*|tekken\.json")
    mistral_only = subset(folder, tmp_path / "mistral", r"params\.json|consolidated.*|tekken\.json")
    reference = reference_model(config)
    vision = config["model_type"] == "mistral3"
    ids, images = image_prompt() if vision else (torch.randint(20, VOCAB, (1, 40)), None)
    with torch.no_grad():
        expected = transformers_logits(reference, ids, images)
        forms = [(folder, "hf"), (folder, "consolidated"), (hf_only, "auto"), (mistral_only, "auto")]
        for where, layout in forms:
            model, _ = load_checkpoint(where, layout=layout)
            args = model.args
            assert (args.dim, args.n_layers, args.n_kv_heads, args.vocab_size) == (64, 2, 2, VOCAB)
            assert (args.rope_theta, args.max_seq_len, args.tied_embeddings) == (1e9, 131072, False)
            if vision:
                v = args.vision
                assert (v.spatial_merge_size, v.adapter_norm, v.adapter_bias) == (2, True, False)
                assert v.hidden_act == "silu"
                assert (v.image_token_id, v.image_break_token_id, v.image_end_token_id) == (10, 12, 13)
            else:
                assert args.vision is None
            assert (our_logits(model, ids, images) - expected).abs().max().item() <= TOL, (where, layout)


def test_served_through_the_registry_in_int4(repo: tuple[str, Path]) -> None:
    from magistral.engine.registry import load_model
    from magistral.model.quantize import Int4Linear

    name, folder = repo
    for form in ("hf", "consolidated"):  # auto picks HF; hide it to serve the consolidated form
        if form == "consolidated":
            folder = subset(folder, folder.parent / f"{name}-consolidated",
                            r"params\.json|consolidated.*|tekken")
        served = load_model(str(folder), quantize="int4")
        try:
            assert served.id == folder.name.lower()
            assert served.max_context_length == 131072
            assert served.vision == (CASES[name][0]["model_type"] == "mistral3")
            model = served.engine.model
            assert isinstance(model.layers[0].attention.wqkv, Int4Linear)
            with torch.no_grad():
                assert torch.isfinite(model(torch.tensor([[1, 3, 40, 41, 4]]))).all()
        finally:
            served.engine.shutdown()


@pytest.mark.parametrize("mode", ["bf16", "int4"])
def test_streamed_load_equals_quantizing_the_loaded_model(mode: str, tmp_path: Path) -> None:
    from magistral.model.quantize import quantize_model

    folder = published_repo("Magistral-Small-2509", tmp_path / "repo")
    ids, images = image_prompt()
    with torch.no_grad():
        for layout in ("hf", "consolidated"):
            streamed, _ = load_checkpoint(folder, quantize=mode, layout=layout)
            whole = quantize_model(load_checkpoint(folder, layout=layout)[0], mode)
            assert torch.equal(our_logits(streamed, ids, images), our_logits(whole, ids, images))
            assert torch.equal(streamed(ids[:, :1]), whole(ids[:, :1]))  # int4: the kernel's path


def test_loading_holds_one_block_of_checkpoint_tensors_at_a_time(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block's matrices are read, quantised and unmapped before the next block's are read.
    Tracks the memory maps themselves: a tensor's pages live exactly as long as its map."""
    import mmap

    from magistral.model.safetensors_io import index_files, shard_files

    folder = published_repo("Devstral-Small-2507", tmp_path / "repo")
    names = {ref: name for name, ref in index_files(shard_files(folder, "model")).items()}
    mapped: dict[int, str] = {}  # id(map) → the tensor it holds, while the map lives
    blocks_mapped_at_reads: list[set[str]] = []
    created: list[mmap.mmap] = []
    real_mmap, real_load = mmap.mmap, TensorRef.load

    def capture(*args: Any, **kwargs: Any) -> mmap.mmap:
        created.append(real_mmap(*args, **kwargs))
        return created[-1]

    def tracked(ref: TensorRef) -> torch.Tensor:
        tensor = real_load(ref)
        handle = created.pop()
        mapped[id(handle)] = names[ref]
        weakref.finalize(handle, mapped.pop, id(handle), None)
        # the blocks' matrices (norm weights, a few KB, stay until the final cast to bf16)
        blocks_mapped_at_reads.append({re.sub(r"^.*layers\.(\d+)\..*", r"\1", n) for n in mapped.values()
                                       if ".layers." in n and "_proj." in n})
        return tensor

    monkeypatch.setattr(mmap, "mmap", capture)
    monkeypatch.setattr(TensorRef, "load", tracked)
    model, _ = load_checkpoint(folder, quantize="int4", layout="hf")
    assert len(blocks_mapped_at_reads) == len(names)
    assert max(len(blocks) for blocks in blocks_mapped_at_reads) == 1
    assert not mapped  # fp32 files: every tensor was converted, and its map dropped
    assert all(p.dtype != torch.float32 for p in model.state_dict().values())


# --- fields we do not support are refused by name; extra fields are ignored ----------------------

@pytest.mark.parametrize("field, value, message", [
    ("yarn", {"factor": 16.0, "original_max_position_embeddings": 16384, "beta": 32.0, "alpha": 1.0}, "yarn"),
    ("llama_4_scaling", {"original_max_position_embeddings": 16384, "beta": 0.1}, "llama_4_scaling"),
    ("quantization", {"qformat_weight": "fp8_e4m3", "qscheme_act": "TENSOR"}, "quantization"),
    ("q_lora_rank", 1024, "q_lora_rank"),
    ("moe", {"num_experts": 8, "num_experts_per_tok": 2, "num_shared_experts": 1}, "num_shared_experts"),
    ("model_type", "mamba", "mamba"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "yarn"),
])
def test_unsupported_params_fields_are_named(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        args_from_params({**TEXT_PARAMS, field: value})


def test_unsupported_vision_projector_is_named() -> None:
    vision = {**VISION_PARAMS, "mm_projector_id": "mlp_2x"}
    with pytest.raises(ValueError, match="mm_projector_id 'mlp_2x'"):
        args_from_params({**TEXT_PARAMS, "vision_encoder": vision})


def test_params_fields_tolerated() -> None:
    extra = {**TEXT_PARAMS, "yarn": None, "quantization": None, "sliding_window": None, "lora": None,
             "model_type": "transformer", "max_seq_len": 40960, "some_future_field": [1, 2],
             "vision_encoder": {**VISION_PARAMS, "some_future_field": True}}
    args = args_from_params(extra)
    assert args.max_seq_len == 40960 and args.vision.spatial_merge_size == 2
    # Pixtral 12B style: no merger, no norm; our own older files name the norm adapter_norm
    pixtral = {k: v for k, v in VISION_PARAMS.items()
               if k not in ("mm_projector_id", "spatial_merge_size", "add_pre_mm_projector_layer_norm")}
    assert args_from_params({**TEXT_PARAMS, "vision_encoder": pixtral}).vision.spatial_merge_size == 1
    legacy = {**pixtral, "spatial_merge_size": 2, "adapter_norm": True}
    assert (args_from_params({**TEXT_PARAMS, "vision_encoder": legacy}).vision.adapter_norm is True)
    # sliding-window attention is exact up to the window: the context is capped there
    assert args_from_params({**TEXT_PARAMS, "sliding_window": 4096}).max_seq_len == 4096
    assert args_from_params({**TEXT_PARAMS, "sliding_window": [None, 8192, None]}).max_seq_len == 8192


@pytest.mark.parametrize("change, message", [
    ({"text_config": {**TEXT_CONFIG, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}}, "yarn"),
    ({"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}}, "fp8"),
    ({"text_config": {**TEXT_CONFIG, "hidden_act": "gelu"}}, "gelu"),
    ({"vision_feature_layer": -2}, "vision_feature_layer"),
])
def test_unsupported_hf_fields_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        args_from_hf_config({**MISTRAL3_CONFIG, **change})


def test_incomplete_or_foreign_files_are_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from magistral.model.safetensors_io import index_safetensors

    folder = published_repo("Devstral-Small-2507", tmp_path / "repo")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    (folder / shards[1]).unlink()  # an interrupted download, or only the other form wanted
    with pytest.raises(FileNotFoundError, match=shards[1]):
        load_checkpoint(folder, layout="hf")
    assert load_checkpoint(folder)[0].args.n_layers == 2  # auto: the complete, consolidated form
    for path in folder.glob("consolidated*"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=shards[1]):
        load_checkpoint(folder)
    # FP8 tensors (a checkpoint quantised for another runtime): the dtype is named
    save_file({"norm.weight": torch.ones(8).to(torch.float8_e4m3fn)}, tmp_path / "fp8.safetensors")
    with pytest.raises(ValueError, match="F8_E4M3"):
        index_safetensors(tmp_path / "fp8.safetensors")
