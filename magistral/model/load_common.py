"""What every checkpoint format shares: q/k layout conversion and strict assembly on `meta`."""

from __future__ import annotations

import numpy as np
import torch

from magistral.config import ModelArgs
from magistral.model.transformer import Transformer


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved RoPE pairs (Mistral consolidated, llama.cpp) → rotate-half halves (ours, HF)."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def permute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Rotate-half halves → interleaved pairs (the inverse of unpermute_qk)."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def build_model(args: ModelArgs, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                source: str = "checkpoint") -> Transformer:
    """Build on `meta` and assign the tensors in; any missing or unexpected key is an error."""
    if "output.weight" not in state and args.tied_embeddings is False and "tok_embeddings.weight" in state:
        args.tied_embeddings = True  # the file stores one matrix for both ends
    with torch.device("meta"):
        model = Transformer(args)
    expected = set(model.state_dict())
    if args.tied_embeddings:
        expected.discard("output.weight")
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{source}: missing tensors {missing[:10]}{'…' if len(missing) > 10 else ''}, "
                         f"unexpected tensors {unexpected[:10]}{'…' if len(unexpected) > 10 else ''}")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, tensor in state.items():
        if tuple(tensor.shape) != shapes[key]:
            raise ValueError(f"{source}: tensor {key} has shape {tuple(tensor.shape)}, "
                             f"expected {shapes[key]}")
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if args.tied_embeddings:
        model.tie_weights()
    return model.eval()
