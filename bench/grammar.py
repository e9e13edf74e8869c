"""What constrained decoding costs, and why llguidance.

1. The cost inside the serving engine: decode throughput of the default model (int4, as served)
   at batch 1 and 16, free vs held to a JSON schema, 64 tokens per sequence; runs interleaved,
   medians.
2. Grammar engines side by side on the default model's 49k vocabulary: compiling a JSON schema,
   and computing the allowed-token mask at each step of a real answer, for llguidance (what we
   use) and xgrammar (when installed).

    python bench/grammar.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magistral.chat.tools import TaggedToolFormat, ToolChoice, json_grammar  # noqa: E402
from magistral.engine.engine import GenerationRequest  # noqa: E402
from magistral.engine.registry import load_model  # noqa: E402
from magistral.engine.sampling import SamplingParams  # noqa: E402

SCHEMAS = {
    "person": ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"]}, {"name": "Ada Lovelace", "age": 36}),
    "order": ({"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
            "kind": {"enum": ["book", "food", "tool"]}}, "required": ["sku", "qty", "kind"]}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, "required": ["id", "items"]},
        {"id": "ABC-1234", "items": [{"sku": "x-1", "qty": 2, "kind": "book"},
                                     {"sku": "y-22", "qty": 1, "kind": "tool"}], "note": None}),
}


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def bench_llguidance(tokenizer, schema: dict, ids: list[int], runs: int) -> tuple[float, float]:
    import llguidance as llg

    lark = json_grammar(schema)
    lltok = tokenizer.grammar_tokenizer()
    compiles, masks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        matcher = llg.LLMatcher(lltok, lark, log_level=0)
        matcher.compute_bitmask()  # the first mask finishes the lazy compile
        compiles.append(time.perf_counter() - start)
        for token in ids:
            start = time.perf_counter()
            matcher.compute_bitmask()
            masks.append(time.perf_counter() - start)
            assert matcher.consume_token(token), matcher.get_error()
    return median_us(compiles), median_us(masks)


def bench_xgrammar(tokenizer, schema: dict, ids: list[int], runs: int) -> tuple[float, float] | None:
    try:
        import xgrammar as xgr
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer._tok, eos_token="<|im_end|>")
    info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=tokenizer.vocab_size)
    compiles, masks = [], []
    for _ in range(runs):
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        start = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(schema))
        compiles.append(time.perf_counter() - start)
        matcher = xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
        for token in ids:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            masks.append(time.perf_counter() - start)
            assert matcher.accept_token(token)
    return median_us(compiles), median_us(masks)


async def decode_rate(model, batch: int, lark: str | None, tokens: int) -> float:
    """Aggregate generated tokens per second for `batch` sequences run together."""
    eos = sorted(model.tokenizer.stop_ids)
    params = SamplingParams(temperature=0.0, max_tokens=tokens, logit_bias={t: -100.0 for t in eos})
    prompt = model.prompter.encode_text("Here is a long list of things people like to eat:")
    requests = [GenerationRequest(prompt, params, constraint=model.prompter.grammar.constraint(lark)
                                  if lark else None) for _ in range(batch)]

    async def run(request: GenerationRequest) -> int:
        count = 0
        async for output in model.engine.generate(request):
            count = output.completion_tokens
        return count

    start = time.perf_counter()
    counts = await asyncio.gather(*(run(r) for r in requests))
    elapsed = time.perf_counter() - start
    assert all(c == tokens for c in counts), counts  # nothing ended early: the same work
    return sum(counts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model = load_model(max_active=16)
    tokenizer = model.tokenizer

    # long enough not to end within --tokens: the same number of steps, free or constrained
    endless = {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 500}
    tools = [{"type": "function", "function": {"name": "record", "parameters": endless}}]
    grammars = {"json_schema": json_grammar(endless),
                "tool call (required)": TaggedToolFormat().grammar(tools, ToolChoice("required"), True)}
    print(f"\n## Decode throughput in the engine ({args.tokens} tokens per sequence, "
          f"median of {args.runs})\n")
    print("| batch | free (tok/s) | constrained | tok/s | cost |")
    print("|---|---|---|---|---|")
    for batch in (1, 16):
        asyncio.run(decode_rate(model, batch, None, 8))  # warm up this batch size
        rates: dict[str | None, list[float]] = {None: [], **{label: [] for label in grammars}}
        for _ in range(args.runs):  # interleaved, so that drift hits all alike
            rates[None].append(asyncio.run(decode_rate(model, batch, None, args.tokens)))
            for label, lark in grammars.items():
                rates[label].append(asyncio.run(decode_rate(model, batch, lark, args.tokens)))
        free = statistics.median(rates[None])
        for label in grammars:
            held = statistics.median(rates[label])
            print(f"| {batch} | {free:.1f} | {label} | {held:.1f} | {100 * (free / held - 1):+.1f}% |")
    model.engine.shutdown()

    # last: importing xgrammar (triton, transformers) leaves this process's torch slower
    print("\n## Grammar engines (SmolLM2 vocabulary, 49,152 tokens)\n")
    print("| schema | engine | compile (µs, median) | mask per step (µs, median) |")
    print("|---|---|---|---|")
    for name, (schema, example) in SCHEMAS.items():
        ids = tokenizer.encode(json.dumps(example), add_bos=False)
        for engine, result in (("llguidance", bench_llguidance(tokenizer, schema, ids, args.runs)),
                               ("xgrammar", bench_xgrammar(tokenizer, schema, ids, args.runs))):
            if result is not None:
                print(f"| {name} | {engine} | {result[0]:.0f} | {result[1]:.1f} |")


if __name__ == "__main__":
    main()
