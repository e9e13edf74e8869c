"""A GGUF model's own tokenizer (`tokenizer.ggml.*` metadata) on top of Hugging Face `tokenizers`."""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that are special, not text
VISIBLE_SPECIALS = {"[THINK]", "[/THINK]"}

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
