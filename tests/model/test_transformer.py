"""Invariants of the decoder on a tiny random config: cached decoding equals a full forward."""

from __future__ import annotations

import pytest
import torch

from magistral.config import tiny_args
from magistral.model.cache import KVCache, SlotKVCache
from magistral.model.transformer import Transformer


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_args()).eval()


def test_incremental_decoding_equals_full_forward(model: Transformer) -> None:
    tokens = torch.randint(0, model.args.vocab_size, (1, 24))
    with torch.no_grad():
        full = torch.log_softmax(model(tokens), dim=-1)
        cache = KVCache(model.args, capacity=4, max_capacity=64)  # grows on demand
        steps = [torch.log_softmax(model(tokens[:, :8], 0, cache), dim=-1)]
        for pos in range(8, 24):
            steps.append(torch.log_softmax(model(tokens[:, pos:pos + 1], pos, cache), dim=-1))
    incremental = torch.cat(steps, dim=1)
    assert cache.capacity >= 24
    assert torch.allclose(full, incremental, atol=1e-4), (full - incremental).abs().max()


def test_chunked_prefill_equals_single_prefill(model: Transformer) -> None:
    tokens = torch.randint(0, model.args.vocab_size, (1, 40))
    with torch.no_grad():
        whole = model(tokens, 0, KVCache(model.args, 40), last_only=True)
        cache = KVCache(model.args, 40)
        for start in range(0, 40, 16):
            chunked = model(tokens[:, start:start + 16], start, cache, last_only=True)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_prompts_prefilled_together_then_decoded_together_equal_each_alone(model: Transformer) -> None:
    """Right-padded batch prefill into slots, then one batched decode step at each row's own
    position, gives every row the logits of its prompt run alone."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.args.vocab_size, (n,), generator=g).tolist() for n in (9, 3, 6)]
    nexts = [5, 17, 42]
    width = max(map(len, prompts))
    cache = SlotKVCache(model.args, slots=4, capacity=4, max_capacity=64)
    with torch.no_grad():
        model(torch.tensor([p + [0] * (width - len(p)) for p in prompts]), 0,
              cache.for_new_prompts([2, 0, 1]), hidden_only=True)  # any slots, in any order
        # the decode batch is slot-ordered: slot 0 holds prompt 1, slot 1 prompt 2, slot 2 prompt 0
        order = [1, 2, 0]
        positions = [len(prompts[i]) for i in order]
        together = model.decode(torch.tensor([nexts[i] for i in order]), cache.for_decode(positions))
        for row, i in enumerate(order):
            alone = model(torch.tensor([prompts[i] + [nexts[i]]]), last_only=True)
            assert torch.allclose(together[row], alone[0, -1], atol=1e-4), i


def test_slot_cache_holds_the_slots_and_positions_in_use(model: Transformer) -> None:
    """Slots held and their capacity double on demand, keeping what is stored; shrink goes back."""
    cache = SlotKVCache(model.args, slots=16, capacity=8, max_capacity=64)
    assert (cache.held, cache.capacity) == (2, 8)
    with torch.no_grad():
        model(torch.arange(1, 6)[None], 0, cache.for_slot(0), hidden_only=True)
        stored = cache.read(0, 5)
        model(torch.arange(1, 11)[None], 0, cache.for_slot(4), hidden_only=True)
    assert (cache.held, cache.capacity) == (5, 16)
    assert cache.nbytes == 2 * model.args.n_layers * 5 * model.args.n_kv_heads * 16 * model.args.head_dim * 4
    for (k, v), (k2, v2) in zip(stored, cache.read(0, 5), strict=True):
        assert torch.equal(k, k2) and torch.equal(v, v2)
    with pytest.raises(ValueError, match="slot 16"):
        cache.ensure(8, 17)
    with torch.no_grad():
        model(torch.arange(1, 40)[None], 0, cache.for_slot(1), hidden_only=True)
    assert (cache.held, cache.capacity) == (5, 39)
    cache.fit(1, 5)  # the long sequence ended; one of 5 positions remains
    assert (cache.held, cache.capacity) == (2, 19)
    for (k, v), (k2, v2) in zip(stored, cache.read(0, 5), strict=True):
        assert torch.equal(k, k2) and torch.equal(v, v2)
    cache.fit(2, 5)  # already the smallest that holds it
    assert (cache.held, cache.capacity) == (2, 19)
    cache.shrink()
    assert (cache.held, cache.capacity) == (2, 8) and cache.keys[0].shape[0] == 2


def test_cache_refuses_to_grow_past_its_maximum(model: Transformer) -> None:
    cache = KVCache(model.args, capacity=4, max_capacity=8)
    with torch.no_grad(), pytest.raises(ValueError, match="overflow"):
        model(torch.zeros(1, 9, dtype=torch.long), 0, cache)


def test_tied_output_head_shares_the_embedding() -> None:
    model = Transformer(tiny_args(tied_embeddings=True))
    model.tie_weights()
    assert model.output.weight.data_ptr() == model.tok_embeddings.weight.data_ptr()


def test_magistral_medium_preset_counts_45b_on_meta() -> None:
    from magistral.config import magistral_medium_args
    args = magistral_medium_args()
    with torch.device("meta"):
        big = Transformer(args)
    total = sum(p.numel() for p in big.parameters())
    expert = 3 * args.dim * args.hidden_dim
    active = total - args.n_layers * (args.moe.num_experts - args.moe.num_experts_per_tok) * expert
    assert abs(total - 45e9) <= 0.05 * 45e9, total
    assert 12e9 < active < 15e9
    assert args.max_seq_len == 131072 and args.vocab_size == 131072 and args.rope_theta == 1e9
    assert big.vision_encoder is not None and big.tok_embeddings.weight.is_meta


def test_slot_cache_and_its_views_live_on_the_cache_device(model: Transformer) -> None:
    """The engine's device parameter: every tensor a view makes (rows, positions, mask, slots)
    is on the cache's device. "meta" stands in for an accelerator: a tensor left on the CPU by a
    view would fail to combine with the buffers there."""
    cache = SlotKVCache(model.args, slots=3, capacity=8, max_capacity=512, device="meta")
    view = cache.for_decode([5, 70, 2])
    layer = view.layer(0)
    k = torch.empty(3, model.args.n_kv_heads, 1, model.args.head_dim, device="meta")
    keys, values = layer.update(0, k, k)
    assert {t.device.type for t in (view.rows, view.positions, view.mask, keys, values)} == {"meta"}
    assert keys.shape[2] == view.length == 128 and cache.capacity > view.length
    assert cache.for_new_prompts([1, 0]).slots.device.type == "meta"
