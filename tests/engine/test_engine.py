"""The async engine on the real default model."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.engine.engine import Engine, GenerationOutput, GenerationRequest
from magistral.engine.sampling import SamplingParams
from magistral.model.cache import KVCache
from magistral.model.load import LoadedModel


@pytest.fixture(scope="module")
def engine(loaded: LoadedModel, tokenizer: GGUFTokenizer):
    eng = Engine(loaded.model, tokenizer, max_active=4)
    yield eng
    eng.shutdown()


def prompt(loaded: LoadedModel, tokenizer: GGUFTokenizer, question: str) -> list[int]:
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    return tokenizer.encode(template.render([{"role": "user", "content": question}]))


async def collect(engine: Engine, ids: list[int], params: SamplingParams) -> list[GenerationOutput]:
    return [o async for o in engine.generate(GenerationRequest(ids, params))]


def run(coro):
    return asyncio.run(coro)


def test_greedy_output_equals_direct_model_decoding(engine, loaded, tokenizer) -> None:
    ids = prompt(loaded, tokenizer, "List three fruits.")
    outputs = run(collect(engine, ids, SamplingParams(temperature=0.0, max_tokens=20)))
    expected, cache, seq = [], KVCache(loaded.model.args, len(ids) + 20), list(ids)
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids]), 0, cache, last_only=True)
        while len(expected) < 20:
            token = int(logits[0, -1].argmax())
            if token in tokenizer.stop_ids:
                break
            expected.append(token)
            seq.append(token)
            logits = loaded.model(torch.tensor([[token]]), len(seq) - 1, cache)
    assert "".join(o.text for o in outputs) == tokenizer.decode(expected)
    assert outputs[-1].completion_tokens == len(expected)
    assert outputs[-1].finish_reason == ("length" if len(expected) == 20 else "stop")


def test_seed_reproducible_and_max_tokens(engine, loaded, tokenizer) -> None:
    ids = prompt(loaded, tokenizer, "Write a poem about the sea.")
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=12, seed=1234)
    first = run(collect(engine, ids, params))
    second = run(collect(engine, ids, params))
    assert [o.text for o in first] == [o.text for o in second]
    assert first[-1].finish_reason == "length" and first[-1].completion_tokens == 12


def test_stop_string_cuts_output(engine, loaded, tokenizer) -> None:
    ids = prompt(loaded, tokenizer, "Count from 1 to 10, separated by commas.")
    full = "".join(o.text for o in run(collect(engine, ids, SamplingParams(temperature=0.0,
                                                                           max_tokens=40))))
    assert "4" in full
    stop = full[full.index("4"):full.index("4") + 2]
    outputs = run(collect(engine, ids, SamplingParams(temperature=0.0, max_tokens=40, stop=[stop])))
    text = "".join(o.text for o in outputs)
    assert outputs[-1].finish_reason == "stop" and text == full[:full.index(stop)]


def test_concurrent_requests_match_solo_runs(engine, loaded, tokenizer) -> None:
    questions = ["What is 2+2?", "Name a color.", "Say hello.", "What is the sun?", "Name a dog."]
    params = SamplingParams(temperature=0.0, max_tokens=10)
    solo = [run(collect(engine, prompt(loaded, tokenizer, q), params)) for q in questions]

    async def together():
        return await asyncio.gather(*(collect(engine, prompt(loaded, tokenizer, q), params)
                                      for q in questions))
    concurrent = run(together())  # five requests, four slots: one waits in the queue
    assert ["".join(o.text for o in c) for c in concurrent] == \
        ["".join(o.text for o in s) for s in solo]
    for _ in range(100):  # the KV slots grown for the burst go back to their first size
        if engine.cache.held == 2:
            break
        time.sleep(0.1)
    assert (engine.cache.held, engine.cache.capacity) == engine.cache.initial == (2, 256)


def test_closing_the_stream_frees_the_slot(engine, loaded, tokenizer) -> None:
    ids = prompt(loaded, tokenizer, "Write a very long essay about history.")

    async def read_two_then_hang_up() -> int:
        stream = engine.generate(GenerationRequest(ids, SamplingParams(temperature=0.0, max_tokens=500)))
        await anext(stream)
        await anext(stream)
        assert engine.active_count == 1
        await stream.aclose()
        for _ in range(200):
            if engine.active_count == 0:
                return 0
            await asyncio.sleep(0.01)
        return engine.active_count
    assert run(read_two_then_hang_up()) == 0


def test_generation_ends_at_the_context_limit(loaded, tokenizer) -> None:
    small = Engine(loaded.model, tokenizer)
    small.max_context = 40
    try:
        ids = prompt(loaded, tokenizer, "Tell me a long story.")
        outputs = run(collect(small, ids, SamplingParams(temperature=0.0, max_tokens=1000)))
        assert outputs[-1].finish_reason == "model_length"
        assert len(ids) + outputs[-1].completion_tokens == 40
        with pytest.raises(ValueError, match="does not fit"):
            run(collect(small, list(range(40)), SamplingParams()))
    finally:
        small.shutdown()


def test_prompt_logprobs_shared_prefix_equal_each_prompt_alone(loaded, tokenizer) -> None:
    """Options of one question arrive together and share the question: computed once (scoring
    requests are batched even by a batch-invariant engine), the prompt logprobs equal those of
    each prompt scored on its own, and a full forward pass."""
    from magistral.engine.engine import SHARED_PREFIX_MIN

    engine = Engine(loaded.model, tokenizer, max_active=4)
    try:
        question = tokenizer.encode("Question: Which gas do plants take in from the air to make sugar?\n"
                                    "Answer:")
        assert len(question) > SHARED_PREFIX_MIN
        prompts = [question + tokenizer.encode(option) for option in
                   (" Oxygen", " Carbon dioxide", " Nitrogen", " Helium gas")]
        params = SamplingParams(temperature=0.0, max_tokens=0)

        async def score(batch: list[list[int]]) -> list[list]:
            async def one(ids: list[int]) -> list:
                request = GenerationRequest(ids, params, prompt_logprobs=2)
                outputs = [o async for o in engine.generate(request)]
                return outputs[0].prompt_logprobs
            return await asyncio.gather(*(one(ids) for ids in batch))

        together = run(score(prompts))
        alone = [run(score([ids]))[0] for ids in prompts]
        for ids, shared, single in zip(prompts, together, alone, strict=True):
            assert shared[0] is None and len(shared) == len(ids)
            assert [e.token for e in shared[1:]] == ids[1:]
            assert max(abs(a.logprob - b.logprob) for a, b in zip(shared[1:], single[1:], strict=True)) < 1e-4
            with torch.no_grad():
                reference = torch.log_softmax(loaded.model(torch.tensor([ids]))[0].float(), dim=-1)
            expected = [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]
            assert max(abs(a.logprob - b) for a, b in zip(shared[1:], expected, strict=True)) < 1e-4
            assert [t for t, _ in shared[-1].top] == reference[-2].topk(2).indices.tolist()
    finally:
        engine.shutdown()


def test_sixteen_prompts_decode_alike_together_alone_and_from_the_cache(loaded, tokenizer) -> None:
    """Batch invariance, the default: sixteen different prompts of different lengths at
    temperature 0 get the same tokens with the same logprobs, bit for bit, whether they run
    together, one at a time, or again with their prompts in the prefix cache — on the int4
    weights serving uses."""
    import copy

    from magistral.model.quantize import quantize_model

    questions = ["Name a colour.", "What is 2+2?", "Say hello in French.", "Name a planet.",
                 "Capital of Italy?", "Give me a fruit.", "Count to five.", "What do bees make?",
                 "Name an ocean.", "What is water made of?", "Write a haiku about snow.",
                 "Who wrote Hamlet? Answer in one short sentence, please.", "Name a metal.",
                 "What is a triangle?", "Translate 'cat' to Spanish.", "What day comes after Monday?"]
    prompts = [prompt(loaded, tokenizer, q) for q in questions]
    params = SamplingParams(temperature=0.0, max_tokens=16, logprobs=0)
    engine = Engine(quantize_model(copy.deepcopy(loaded.model), "int4"), tokenizer, max_active=16)

    async def one(ids: list[int]) -> tuple[list[tuple[int, float]], int]:
        outputs = await collect(engine, ids, params)
        return [(t.token, t.logprob) for o in outputs for t in o.logprobs], outputs[-1].cached_tokens

    async def together() -> list:
        return await asyncio.gather(*(one(ids) for ids in prompts))

    try:
        alone = [run(one(ids)) for ids in prompts[::-1]][::-1]  # cold: each prompt's first run
        batched = run(together())  # every prompt now a whole-prompt cache hit
        assert [cached for _, cached in alone] == [0] * 16
        assert [cached for _, cached in batched] == [len(ids) for ids in prompts]
        engine.prefix_cache = type(engine.prefix_cache)(0)  # no cache: together and cold
        cold_batched = run(together())
    finally:
        engine.shutdown()
    assert all(tokens for tokens, _ in alone) and sum(len(tokens) for tokens, _ in alone) > 100
    assert [t for t, _ in batched] == [t for t, _ in alone]
    assert [t for t, _ in cold_batched] == [t for t, _ in alone]


def test_an_invariant_engine_takes_a_cached_prefix_only_where_a_chunk_starts(loaded, tokenizer) -> None:
    """A shared system prompt shorter than PREFILL_CHUNK is not reused by a batch-invariant engine
    (its KV would come from other chunk boundaries than a fresh prefill's); a repeated prompt is."""
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    system = {"role": "system", "content": "You are a careful assistant. " * 12}
    prompts = [tokenizer.encode(template.render([system, {"role": "user", "content": q}]))
               for q in ("Name a fruit.", "Name a color.", "Name a fruit.")]
    engine = Engine(loaded.model, tokenizer)
    try:
        cached = [run(collect(engine, ids, SamplingParams(temperature=0.0, max_tokens=2)))[-1].cached_tokens
                  for ids in prompts]
    finally:
        engine.shutdown()
    assert cached == [0, 0, len(prompts[2])]  # the whole prompt, its first token from cached logits
