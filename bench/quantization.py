"""How close the serving weights stay to fp32: 10 prompts × 128 greedy tokens each, decoded
with the fp32 model and with the bf16 / int4 serving models (KV cache, same code path).

    python bench/quantization.py
Prints, per mode, the tokens equal at the same position and the length of the common prefix.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magistral.chat.template import ChatTemplate  # noqa: E402
from magistral.chat.tokenizer import GGUFTokenizer  # noqa: E402
from magistral.model.cache import KVCache  # noqa: E402
from magistral.model.load import load_gguf  # noqa: E402
from magistral.model.quantize import dense_prefill, quantize_model  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a poem about the sea.", "Explain photosynthesis simply.",
           "List five fruits and their colors.", "How do I reverse a list in Python?",
           "Tell me a short story about a dragon.", "What causes rain?", "Give three tips for better sleep.",
           "Summarize the plot of Romeo and Juliet.", "Why is the sky blue?"]
TOKENS = 128


def greedy(model, ids: list[int]) -> list[int]:
    dtype = model.tok_embeddings.weight.dtype
    cache = KVCache(model.args, len(ids) + TOKENS, dtype=dtype)
    with dense_prefill():
        logits = model(torch.tensor([ids]), 0, cache, last_only=True)
    out = []
    for i in range(TOKENS):  # no stop token: compare all 128 positions
        token = int(logits[0, -1].argmax())
        out.append(token)
        logits = model(torch.tensor([[token]]), len(ids) + i, cache)
    return out


def main() -> None:
    torch.set_grad_enabled(False)
    loaded = load_gguf()
    tokenizer = GGUFTokenizer(loaded.metadata)
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    prompts = [tokenizer.encode(template.render([{"role": "user", "content": p}])) for p in PROMPTS]
    reference = [greedy(loaded.model, ids) for ids in prompts]
    print(f"{'mode':<6} {'same-position tokens':>22} {'common prefix per prompt':>40} {'ms/token':>9}")
    for mode in ("bf16", "int4"):
        model = quantize_model(copy.deepcopy(loaded.model), mode)
        start = time.perf_counter()
        outputs = [greedy(model, ids) for ids in prompts]
        per_token = (time.perf_counter() - start) * 1000 / (TOKENS * len(prompts))
        same = sum(a == b for ref, out in zip(reference, outputs, strict=True)
                   for a, b in zip(ref, out, strict=True))
        prefixes = [next((i for i, (a, b) in enumerate(zip(ref, out, strict=True)) if a != b), TOKENS)
                    for ref, out in zip(reference, outputs, strict=True)]
        print(f"{mode:<6} {same:>10} / {TOKENS * len(prompts):<10} {str(prefixes):>40} {per_token:>9.1f}")


if __name__ == "__main__":
    main()
