"""The tokenizer rebuilt from GGUF metadata against transformers' reading of the same file."""

from __future__ import annotations

import pytest

from magistral.chat.tokenizer import GGUFTokenizer, IncrementalDecoder
from magistral.model.load import default_gguf_path

TEXTS = [
    "Hello, my name is 12345 and the sky is blue.",
    "<|im_start|>user\nWhat's 2+2? café 日本語 🙂\n\n  spaces   x<|im_end|>",
    "def f(x):\n    return x**2  # 3.14159\n\ttabs\r\nwindows",
    "I'm   we'll  THEY'RE don't",
]


def test_encoding_matches_transformers(tokenizer: GGUFTokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    path = default_gguf_path()
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in TEXTS:
        assert tokenizer.encode(text) == reference(text, add_special_tokens=False).input_ids


def test_special_tokens_encode_to_their_ids_and_hide_in_output(tokenizer: GGUFTokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>assistant\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == tokenizer.eos_id == 2
    assert tokenizer.decode(ids) == "assistant\nhi"
    assert tokenizer.stop_ids == {2}


def test_incremental_decoder_holds_back_partial_characters(tokenizer: GGUFTokenizer) -> None:
    text = "café 日本語 🙂 ok, ünïcödé"
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in tokenizer.encode(text)]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas  # at least one token ended mid-character and was held back


def test_a_truncated_tekken_is_a_valid_byte_level_bpe(tmp_path) -> None:
    from magistral.chat.mistral_prompt import MistralPrompter
    from magistral.chat.tekken import write_v13_tekken

    write_v13_tekken(tmp_path / "tekken.json", ranks=2048)
    prompter = MistralPrompter(tmp_path / "tekken.json")
    inner = prompter.mistral.instruct_tokenizer.tokenizer
    assert inner.n_words == 1000 + 2048 and prompter.reasoning
    text = "Zürich: A=3 B=7, ∑ 10 ✓"
    ids = prompter.encode_text(text, add_special=False)
    assert max(ids) < inner.n_words and inner.decode(ids) == text  # any text, small ids
