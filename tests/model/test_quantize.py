"""Serving weights: int4 re-quantization of 4-bit GGUF weights is lossless up to bf16 scales."""

from __future__ import annotations

import copy

import torch

from magistral.model.cache import KVCache
from magistral.model.load import LoadedModel
from magistral.model.quantize import (
    INT4_MAX_ROWS,
    INT8_MAX_ROWS,
    Int4Linear,
    Int8Linear,
    quantize_model,
    set_batch_invariant,
)


def q4_1_like(out_features: int, in_features: int) -> torch.Tensor:
    """Weights as a Q4_1 block stores them: min + q * step, q in 0..15, both ends used."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (out_features, in_features // 32, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15
    step = torch.rand(out_features, in_features // 32, 1, generator=g) * 0.01
    low = -torch.rand(out_features, in_features // 32, 1, generator=g) * 0.1
    return (low + q * step).reshape(out_features, in_features)


def test_int4_linear_reproduces_4bit_weights() -> None:
    weight = q4_1_like(96, 128)
    layer = Int4Linear(weight)
    layer.batch_invariant = False
    for rows in (1, INT4_MAX_ROWS, INT4_MAX_ROWS + 1):  # int4 kernel, then the bf16 path
        x = torch.randn(rows, 128)
        exact = x @ weight.T
        error = (layer(x).float() - exact).norm() / exact.norm()
        assert error < 0.01, (rows, error)


def test_int8_linear_close_to_float_on_both_paths() -> None:
    weight = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
    layer = Int8Linear(weight)
    assert layer.int8_weight.dtype == torch.int8
    layer.batch_invariant = False
    for rows in (1, INT8_MAX_ROWS, INT8_MAX_ROWS + 1):  # int8 kernel, then the bf16 path
        x = torch.randn(rows, 64)
        exact = x @ weight.T
        error = (layer(x).float() - exact).norm() / exact.norm()
        assert error < 0.01, (rows, error)


def test_a_row_gets_the_same_numbers_whatever_the_rows_beside_it() -> None:
    """Batch invariance: by default a decode row's output is bit-identical for 1..16 rows (the
    quantized kernels in chunks); with the fast path, rows past the crossover take bf16 copies."""
    x = torch.randn(16, 128, generator=torch.Generator().manual_seed(3))
    for layer in (Int4Linear(q4_1_like(96, 128)), Int8Linear(torch.randn(96, 128))):
        alone = torch.cat([layer(x[i:i + 1]) for i in range(16)])
        for rows in range(1, 17):
            assert torch.equal(layer(x[:rows]), alone[:rows]), (type(layer).__name__, rows)
        set_batch_invariant(torch.nn.Sequential(layer), False)
        assert not torch.equal(layer(x), alone)


def test_quantized_model_stays_close_to_fp32(loaded: LoadedModel) -> None:
    fp32 = loaded.model
    int4 = quantize_model(copy.deepcopy(fp32), "int4")
    packed = int4.layers[0].attention.wqkv.packed
    assert packed.dtype == torch.uint8 and packed.numel() * 2 == (576 + 2 * 192) * 576  # 4 bits each
    ids = torch.tensor([[1, 9690, 198, 504, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        a = fp32(ids)[0, -1]
        b = int4(ids)[0, -1]
        cache = KVCache(int4.args, 20, dtype=torch.bfloat16)
        int4(ids[:, :12], 0, cache)
        step = [int4(ids[:, i:i + 1], i, cache)[0, -1] for i in range(12, 16)][-1]
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.995
    assert a.topk(5).indices.tolist()[:2] == b.topk(5).indices.tolist()[:2]
    assert torch.nn.functional.cosine_similarity(b, step, dim=0) > 0.995  # decode path ~ prefill path
