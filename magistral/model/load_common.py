"""What every checkpoint format shares: q/k layout conversion and strict assembly on `meta`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from magistral.config import ModelArgs
from magistral.model.quantize import finish_quantization, quantize_block, validate_mode
from magistral.model.transformer import Transformer

Array = np.ndarray | torch.Tensor


def unpermute_qk(weight: Array, n_heads: int) -> Array:
    """Interleaved RoPE pairs (Mistral consolidated, llama.cpp) → rotate-half halves (ours, HF).
    Works on numpy arrays and torch tensors alike (of any dtype, bf16 included)."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def permute_qk(weight: Array, n_heads: int) -> Array:
    """Rotate-half halves → interleaved pairs (the inverse of unpermute_qk)."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _check_tensors(model: Transformer, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Any missing or unexpected key, or any wrong shape, is an error naming the tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.args.tied_embeddings:
        expected.pop("output.weight")
    missing = sorted(expected.keys() - shapes.keys())
    unexpected = sorted(shapes.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{source}: missing tensors {missing[:10]}{'…' if len(missing) > 10 else ''}, "
                         f"unexpected tensors {unexpected[:10]}{'…' if len(unexpected) > 10 else ''}")
    for key, shape in shapes.items():
        if tuple(shape) != expected[key]:
            raise ValueError(f"{source}: tensor {key} has shape {tuple(shape)}, expected {expected[key]}")


def _meta_model(args: ModelArgs, names: set[str]) -> Transformer:
    if "output.weight" not in names and args.tied_embeddings is False and "tok_embeddings.weight" in names:
        args.tied_embeddings = True  # the file stores one matrix for both ends
    with torch.device("meta"):
        return Transformer(args)


def build_model(args: ModelArgs, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                source: str = "checkpoint") -> Transformer:
    """Build on `meta` and assign the tensors in; any missing or unexpected key is an error."""
    model = _meta_model(args, set(state))
    _check_tensors(model, {k: tuple(v.shape) for k, v in state.items()}, source)
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if args.tied_embeddings:
        model.tie_weights()
    return model.eval()


@dataclass
class LazyTensor:
    """One of our parameters as a checkpoint will give it: its shape now, its values on `load()`
    (read from disk then, e.g. a memory-mapped view with the q/k layout undone)."""

    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


def assemble(args: ModelArgs, tensors: dict[str, LazyTensor], quantize: str = "none",
             dtype: torch.dtype = torch.float32, source: str = "checkpoint") -> Transformer:
    """Build on `meta`, then fill and convert one decoder block at a time, so the full-precision
    model never exists whole: with quantize "int4" or "bf16" each block's checkpoint tensors
    are read, turned into serving weights (model/quantize.py) and dropped before the next block
    is read. Peak memory is the serving model plus one block, not the checkpoint's fp32 size.
    quantize "none" keeps `dtype` (fp32 by default), as `build_model` does."""
    validate_mode(quantize)
    tensors = dict(tensors)  # filled entries are popped, so each block's views go with it
    model = _meta_model(args, set(tensors))
    _check_tensors(model, {k: v.shape for k, v in tensors.items()}, source)

    def fill(module: torch.nn.Module, prefix: str) -> None:
        # quantized modes read in the checkpoint's own dtype: quantize_block converts each
        # matrix once, where a cast here would hold a second full-precision copy of the block
        state = {name: tensors.pop(prefix + name).load() for name in module.state_dict()
                 if prefix + name in tensors}
        if quantize == "none":
            state = {k: v if v.dtype == dtype else v.to(dtype) for k, v in state.items()}
        module.load_state_dict(state, strict=False, assign=True)

    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            fill(layer, f"layers.{i}.")
            if quantize != "none":
                quantize_block(layer, quantize)
        fill(model, "")  # embeddings, final norm, head, vision encoder and adapter
        if args.tied_embeddings:
            model.tie_weights()
        if quantize != "none":
            finish_quantization(model, quantize)
    return model.eval()
