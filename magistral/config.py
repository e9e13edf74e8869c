"""Model hyperparameters as small dataclasses (mistral-inference style)."""

from __future__ import annotations

from dataclasses import dataclass


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


def tiny_args(**overrides: object) -> ModelArgs:
    """A few-thousand-parameter config for fast invariant tests."""
    args = dict(
        dim=64, n_layers=2, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2,
        vocab_size=256, rope_theta=10000.0, max_seq_len=512,
    )
    args.update(overrides)
    return ModelArgs(**args)  # type: ignore[arg-type]
