"""Our GGUF loader + decoder against transformers' Llama loaded from the same GGUF file."""

from __future__ import annotations

import pytest
import torch

from magistral.chat.tokenizer import GGUFTokenizer
from magistral.model.cache import KVCache
from magistral.model.load import LoadedModel, default_gguf_path
from magistral.model.load_common import unpermute_qk

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reference():
    path = default_gguf_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_hyperparameters_come_from_gguf_metadata(loaded: LoadedModel) -> None:
    args = loaded.model.args
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads) == (576, 30, 9, 3)
    assert (args.hidden_dim, args.vocab_size, args.max_seq_len) == (1536, 49152, 8192)
    assert args.rope_theta == 100000.0 and args.tied_embeddings


def test_unpermute_inverts_llama_cpp_permutation() -> None:
    weight = torch.randn(2 * 8, 5).numpy()  # two heads of dim 8
    permuted = weight.reshape(2, 2, 4, 5).swapaxes(1, 2).reshape(weight.shape)  # convert_hf_to_gguf
    assert (unpermute_qk(permuted, 2) == weight).all()


def test_logits_match_transformers(loaded: LoadedModel, tokenizer: GGUFTokenizer, reference) -> None:
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog. 1 + 2 = 3")])
    with torch.no_grad():
        ours = loaded.model(ids)
        theirs = reference(ids).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-3


def test_32_greedy_tokens_match_transformers(loaded: LoadedModel, tokenizer: GGUFTokenizer,
                                             reference) -> None:
    prompt = tokenizer.encode("<|im_start|>user\nTell me a story about a dragon.<|im_end|>\n"
                              "<|im_start|>assistant\n")
    theirs = list(prompt)
    with torch.no_grad():
        for _ in range(32):  # the reference recomputes the whole sequence every step
            theirs.append(int(reference(torch.tensor([theirs])).logits[0, -1].argmax()))
        cache = KVCache(loaded.model.args, len(prompt) + 32)
        logits = loaded.model(torch.tensor([prompt]), 0, cache, last_only=True)
        ours = list(prompt)
        for _ in range(32):  # ours decodes incrementally from the KV cache
            ours.append(int(logits[0, -1].argmax()))
            logits = loaded.model(torch.tensor([[ours[-1]]]), len(ours) - 1, cache)
    assert ours[len(prompt):] == theirs[len(prompt):]
