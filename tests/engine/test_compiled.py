"""The compiled decode step (engine/compiled.py) against the eager one it replaces, on the real
default model: the same logits in fp32, the same greedy tokens on the int4 serving weights, and
still batch-invariant."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.engine.compiled import CompiledDecoder, batch_buckets
from magistral.engine.engine import Engine, GenerationRequest
from magistral.engine.sampling import SamplingParams
from magistral.model.cache import PV_BLOCK, SlotKVCache
from magistral.model.load import LoadedModel
from magistral.model.quantize import quantize_model


def test_one_graph_per_int4_chunk_count() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2]
    assert batch_buckets(16) == [1, 2, 9]
    assert batch_buckets(17) == [1, 2, 9, 17]


def test_compiled_and_eager_steps_agree_in_fp32(loaded: LoadedModel) -> None:
    """Three rows at different positions, one past a PV_BLOCK boundary, through every layer."""
    model = loaded.model
    decoder = CompiledDecoder(model, max_batch=4, dtype=torch.float32, background=False)
    lengths = [PV_BLOCK - 4, 3, PV_BLOCK + 6]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # as the engine's cache
        cache = SlotKVCache(model.args, slots=4, capacity=128, max_capacity=2048, dtype=torch.float32)
        for slot, n in enumerate(lengths):
            model(torch.randint(0, 1000, (1, n), generator=g), 0, cache.for_slot(slot), hidden_only=True)
        tokens = torch.tensor([5, 17, 42])
        eager = model.decode(tokens, cache.for_decode(lengths))
        compiled = decoder(tokens, cache.for_decode(lengths))
    assert decoder.eager_steps == 0  # the warmed-up graphs served it
    assert torch.allclose(compiled, eager, atol=1e-4, rtol=0), (compiled - eager).abs().max()


QUESTIONS = ["Name a colour.", "What is 2+2?", "Say hello in French.", "Name a planet.",
             "Capital of Italy?", "Give me a fruit.", "Count to five.", "What do bees make?",
             "Who wrote Hamlet? Answer in one short sentence, please."]


def greedy(engine: Engine, prompts: list[list[int]], together: bool) -> list[list[tuple[int, float]]]:
    """Each prompt's greedy tokens and their logprobs: one at a time, or all at once."""
    params = SamplingParams(temperature=0.0, max_tokens=12, logprobs=0)

    async def one(ids: list[int]) -> list[tuple[int, float]]:
        outputs = [o async for o in engine.generate(GenerationRequest(ids, params))]
        return [(t.token, t.logprob) for o in outputs for t in o.logprobs]

    async def all_at_once() -> list:
        return await asyncio.gather(*(one(ids) for ids in prompts))

    return asyncio.run(all_at_once()) if together else [asyncio.run(one(ids)) for ids in prompts]


@pytest.fixture(scope="module")
def prompts(loaded: LoadedModel, tokenizer: GGUFTokenizer) -> list[list[int]]:
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    return [tokenizer.encode(template.render([{"role": "user", "content": q}])) for q in QUESTIONS]


def test_compiled_engine_gives_the_eager_greedy_tokens_in_fp32(loaded: LoadedModel, tokenizer: GGUFTokenizer,
                                                              prompts: list[list[int]]) -> None:
    engines = {name: Engine(loaded.model, tokenizer, max_active=4, prefix_cache_mb=0, compile_decode=compiled)
               for name, compiled in (("compiled", True), ("eager", False))}
    try:
        assert engines["compiled"]._decode.ready.wait(timeout=600)
        runs = {name: greedy(engine, prompts, together=False) for name, engine in engines.items()}
        assert engines["compiled"]._decode.eager_steps == 0
    finally:
        for engine in engines.values():
            engine.shutdown()
    assert sum(map(len, runs["eager"])) > 60
    assert [[t for t, _ in r] for r in runs["compiled"]] == [[t for t, _ in r] for r in runs["eager"]]
    for got, want in zip(runs["compiled"], runs["eager"], strict=True):
        assert [lp for _, lp in got] == pytest.approx([lp for _, lp in want], abs=1e-4)


def test_compiled_int4_engine_is_batch_invariant(loaded: LoadedModel, tokenizer: GGUFTokenizer,
                                                 prompts: list[list[int]]) -> None:
    """On the int4 weights served, each prompt's tokens and logprobs are the same bit for bit
    alone or among nine (two int4 chunks of rows). (Its greedy tokens need not be the eager
    bf16 path's: Inductor rounds bf16 intermediates once where eager rounds each op, and a
    near tie can then fall the other way.)"""
    engine = Engine(quantize_model(copy.deepcopy(loaded.model), "int4"), tokenizer, max_active=16,
                    prefix_cache_mb=0, compile_decode=True)
    try:
        assert engine._decode.ready.wait(timeout=600)
        alone = greedy(engine, prompts, together=False)
        together = greedy(engine, prompts, together=True)
        assert engine._decode.eager_steps == 0
    finally:
        engine.shutdown()
    assert sum(map(len, alone)) > 60
    assert together == alone


def test_a_compiling_engine_serves_eagerly_meanwhile(loaded: LoadedModel, tokenizer: GGUFTokenizer,
                                                     prompts: list[list[int]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The graphs compile on a background thread: a request is answered before they are ready
    (the warm-up is held until it is), with the eager step's tokens."""
    import threading

    eager = Engine(loaded.model, tokenizer, max_active=2, prefix_cache_mb=0)
    try:
        reference = greedy(eager, prompts[:1], together=False)
    finally:
        eager.shutdown()
    release = threading.Event()
    warm_up = CompiledDecoder._warm_up

    def held_warm_up(self: CompiledDecoder) -> None:
        release.wait()
        warm_up(self)

    monkeypatch.setattr(CompiledDecoder, "_warm_up", held_warm_up)
    engine = Engine(loaded.model, tokenizer, max_active=2, prefix_cache_mb=0, compile_decode=True)
    try:
        first = greedy(engine, prompts[:1], together=False)
        assert not engine._decode.ready.is_set()
        release.set()
        assert engine._decode.ready.wait(timeout=600)
        second = greedy(engine, prompts[:1], together=False)
    finally:
        release.set()
        engine.shutdown()
    assert [t for t, _ in first[0]] == [t for t, _ in reference[0]] == [t for t, _ in second[0]]


def test_a_second_model_compiles_while_the_first_decodes(loaded: LoadedModel) -> None:
    """Skipping guards is a process-wide stance: a ready decoder stepping in a loop must not make
    another decoder's first compile fail (both then serve their steps from graphs)."""
    import threading

    first = CompiledDecoder(loaded.model, max_batch=2, dtype=torch.float32, background=False)
    second_model = copy.deepcopy(loaded.model)
    stop, steps = threading.Event(), []

    def keep_decoding() -> None:
        with torch.inference_mode():
            cache = SlotKVCache(loaded.model.args, slots=2, capacity=256, max_capacity=2048)
            while not stop.is_set():
                first(torch.tensor([5, 6]), cache.for_decode([10, 20]))
                steps.append(1)

    thread = threading.Thread(target=keep_decoding)
    thread.start()
    try:
        while not steps:  # the first decoder is stepping before the second compiles
            stop.wait(0.01)
        second = CompiledDecoder(second_model, max_batch=2, dtype=torch.float32, background=False)
    finally:
        stop.set()
        thread.join()
    assert second.ready.is_set() and second.error is None
    with torch.inference_mode():
        cache = SlotKVCache(loaded.model.args, slots=2, capacity=256, max_capacity=2048)
        second(torch.tensor([5]), cache.for_decode([3]))
    assert first.eager_steps == second.eager_steps == 0 and len(steps) > 1
