"""A GGUF model's own tokenizer (`tokenizer.ggml.*` metadata) on top of Hugging Face `tokenizers`."""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that are special, not text
VISIBLE_SPECIALS = {"[THINK]", "[/THINK]"}

# fill-in-the-middle markers (prefix, suffix, middle) by the names model families give them, for
# GGUFs that predate llama.cpp's tokenizer.ggml.fim_*_token_id keys
_FIM_NAMES = [("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
              ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
              ("<PRE>", "<SUF>", "<MID>")]

# llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) that split digits one by one first
_DIGIT_SPLITTING_PRE = {"smollm", "llama3", "llama-bpe", "qwen2", "deepseek-llm"}


class GGUFTokenizer:
    """Byte-level BPE tokenizer rebuilt from a GGUF's vocabulary, merges and special tokens."""

    def __init__(self, meta: dict[str, Any]):
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"GGUF tokenizer model {kind!r} is not supported yet (only 'gpt2' BPE)")
        tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
        types: list[int] = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        vocab = {tok: i for i, tok in enumerate(tokens)}
        self._tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if meta.get("tokenizer.ggml.pre") in _DIGIT_SPLITTING_PRE:
            self._tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"), byte_level])
        else:
            self._tok.pre_tokenizer = byte_level
        self._tok.decoder = decoders.ByteLevel()
        specials = [t for t, ty in zip(tokens, types, strict=True) if ty in (CONTROL, USER_DEFINED)]
        self._tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        # special tokens are dropped from output text, except the reasoning markers which the
        # reasoning splitter needs to see
        self._hidden_ids = {i for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
                            if ty in (CONTROL, USER_DEFINED) and t not in VISIBLE_SPECIALS}
        self.vocab_size = len(tokens)
        self.bos_id: int | None = meta.get("tokenizer.ggml.bos_token_id")
        self.eos_id: int | None = meta.get("tokenizer.ggml.eos_token_id")
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        self.stop_ids = {meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                          "tokenizer.ggml.eom_token_id") if k in meta}
        self.bos_token = tokens[self.bos_id] if self.bos_id is not None else ""
        self.fim_ids = _fim_ids(meta, vocab)
        self.eos_token = tokens[self.eos_id] if self.eos_id is not None else ""

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokenize text; special-token strings in it (from the chat template) become their ids."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i not in self._hidden_ids],
                                skip_special_tokens=False)

    def grammar_tokenizer(self) -> Any:
        """The vocabulary as llguidance sees it (for constrained decoding)."""
        import llguidance

        return llguidance.LLTokenizer(self._tok.to_str(), n_vocab=self.vocab_size,
                                      eos_token=sorted(self.stop_ids))


def _fim_ids(meta: dict[str, Any], vocab: dict[str, int]) -> tuple[int, int, int] | None:
    """(prefix, suffix, middle) token ids when the model was trained for fill-in-the-middle."""
    keys = [f"tokenizer.ggml.fim_{part}_token_id" for part in ("pre", "suf", "mid")]
    if all(k in meta for k in keys):
        return tuple(int(meta[k]) for k in keys)  # type: ignore[return-value]
    for names in _FIM_NAMES:
        if all(n in vocab for n in names):
            return tuple(vocab[n] for n in names)  # type: ignore[return-value]
    return None


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, holding back incomplete UTF-8."""

    def __init__(self, tokenizer: GGUFTokenizer | Any):  # anything with decode(ids) -> str
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # end of what has been emitted

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        window = self._ids[self._prefix:]
        emitted = self._tokenizer.decode(self._ids[self._prefix:self._read])
        text = self._tokenizer.decode(window)
        if text.endswith("\ufffd"):  # a multi-byte character is still arriving
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted):]
