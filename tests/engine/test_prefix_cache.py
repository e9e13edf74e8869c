"""Prompt-prefix reuse: hits give the same tokens as cold runs; LRU eviction within a budget."""

from __future__ import annotations

import asyncio

import torch

from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.config import tiny_args
from magistral.engine.engine import Engine, GenerationRequest
from magistral.engine.prefix_cache import BLOCK, PrefixCache
from magistral.engine.sampling import SamplingParams
from magistral.model.cache import SlotKVCache
from magistral.model.load import LoadedModel
from magistral.model.transformer import Transformer


def test_lookup_finds_the_longest_shared_block_prefix() -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_args()).eval()
    cache = SlotKVCache(model.args, slots=1, capacity=256, max_capacity=256)
    prefix = PrefixCache(budget_bytes=10 * 2**20)
    tokens = torch.randint(0, 256, (100,)).tolist()
    with torch.no_grad():
        model(torch.tensor([tokens]), 0, cache.for_slot(0))
    prefix.store(tokens[:-1], cache, 0)  # as the engine does: the prompt but its last token
    length, layers = prefix.lookup(tokens[:70] + [1, 2, 3])
    assert length == 64  # two full blocks shared
    assert torch.equal(layers[0][0], cache.keys[0][0, :, :64])
    assert prefix.lookup(tokens)[0] == 99  # the same prompt again: all but the last token
    assert prefix.lookup(tokens[:BLOCK]) is None  # shares less than a block with the stored prompt
    assert prefix.lookup([7] * 50) is None
    assert (prefix.hits, prefix.misses) == (2, 2)


def test_eviction_keeps_the_budget() -> None:
    model = Transformer(tiny_args()).eval()
    cache = SlotKVCache(model.args, slots=1, capacity=256, max_capacity=256)
    per_block = 2 * model.args.n_layers * model.args.n_kv_heads * BLOCK * model.args.head_dim * 4
    prefix = PrefixCache(budget_bytes=3 * per_block)
    prompts = [[i] * (BLOCK + 1) for i in range(5)]  # one block each
    for prompt in prompts:
        prefix.store(prompt[:-1], cache, 0)
        assert prefix.used <= prefix.budget
    assert len(prefix) == 3
    assert prefix.lookup(prompts[0]) is None and prefix.lookup(prompts[4]) is not None
    prefix.lookup(prompts[2])  # recently used: survives the next eviction
    prefix.store([9] * BLOCK, cache, 0)
    assert prefix.lookup(prompts[2]) is not None and prefix.lookup(prompts[3]) is None


def test_engine_prefix_hit_gives_cold_tokens(loaded: LoadedModel, tokenizer: GGUFTokenizer) -> None:
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    system = {"role": "system", "content": "You are a careful assistant. " * 12}
    prompts = [tokenizer.encode(template.render([system, {"role": "user", "content": q}]))
               for q in ("Name a fruit.", "Name a color.")]
    params = SamplingParams(temperature=0.0, max_tokens=12)

    async def run(engine: Engine, ids: list[int]):
        outputs = [o async for o in engine.generate(GenerationRequest(ids, params))]
        return "".join(o.text for o in outputs), outputs[-1].cached_tokens

    cold_engine = Engine(loaded.model, tokenizer, prefix_cache_mb=0, batch_invariant=False)
    warm_engine = Engine(loaded.model, tokenizer, batch_invariant=False)  # any cached prefix
    try:
        cold = [asyncio.run(run(cold_engine, p)) for p in prompts]
        warm = [asyncio.run(run(warm_engine, p)) for p in prompts]
    finally:
        cold_engine.shutdown()
        warm_engine.shutdown()
    assert [c for _, c in cold] == [0, 0]
    assert warm[0][1] == 0 and warm[1][1] >= 64  # the second prompt reuses the shared system prompt
    assert [t for t, _ in warm] == [t for t, _ in cold]


def test_seeded_sampling_repeats_exactly_through_the_cache(loaded: LoadedModel,
                                                           tokenizer: GGUFTokenizer) -> None:
    import copy

    from magistral.model.quantize import quantize_model
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    ids = tokenizer.encode(template.render([{"role": "user", "content": "Tell me a joke."}]))
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=5, max_tokens=40)

    async def run(engine: Engine):
        outputs = [o async for o in engine.generate(GenerationRequest(ids, params))]
        return "".join(o.text for o in outputs), outputs[-1].cached_tokens

    engine = Engine(quantize_model(copy.deepcopy(loaded.model), "int4"), tokenizer)
    try:
        (first, cached_first), (second, cached_second) = asyncio.run(run(engine)), asyncio.run(run(engine))
    finally:
        engine.shutdown()
    # the whole prompt from the cache, its first token sampled from the logits cached with it
    assert cached_first == 0 and cached_second == len(ids)
    assert first == second and len(first) > 20


def test_a_repeated_prompt_starts_from_cached_logits_with_the_same_numbers(loaded: LoadedModel,
                                                                            tokenizer: GGUFTokenizer) -> None:
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    ids = tokenizer.encode(template.render([{"role": "user", "content": "Name three rivers."}]))
    params = SamplingParams(temperature=0.0, max_tokens=12, logprobs=2)

    async def run(engine: Engine):
        outputs = [o async for o in engine.generate(GenerationRequest(ids, params))]
        return [(t.token, t.logprob, t.top) for o in outputs for t in o.logprobs], outputs[-1].cached_tokens

    engine = Engine(loaded.model, tokenizer)
    try:
        first, second, third = (asyncio.run(run(engine)) for _ in range(3))
        entry = next(iter(engine.prefix_cache._entries.values()))
    finally:
        engine.shutdown()
    assert (first[1], second[1], third[1]) == (0, len(ids), len(ids))
    assert entry.last_token == ids[-1] and entry.logits is not None
    assert first[0] == second[0] == third[0] and len(first[0]) == 12
