"""Constrained decoding with llguidance: a Lark grammar (JSON schemas embedded with `%json`)
becomes, per sequence, a mask of the tokens allowed next.

Why llguidance (measured with `python bench/grammar.py` on this 2-core CPU, SmolLM2's 49k
vocabulary): it compiles a schema lazily in about a millisecond and computes a mask in tens of
microseconds per step, so a request pays no compile step and batch 16 stays cheap; xgrammar
compiles each schema ahead (tens to hundreds of milliseconds per new schema) and outlines-core
builds a full regex index per schema. See the README's "Structured outputs" section for figures.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance as llg
import llguidance.numpy as llg_numpy
import numpy as np
import torch

# Grammars come from clients: bound the work one may ask of the parser (defaults are generous)
LIMITS = llg.LLParserLimits(max_grammar_size=200_000, max_lexer_states=100_000, verbose_errors=False)
MAX_SCHEMA_BYTES = 256 * 1024
MAX_SCHEMA_DEPTH = 64


class GrammarError(ValueError):
    """A grammar or schema the engine cannot use; the message says which part."""


def schema_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion (a hostile schema is deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def check_schema_size(schema: Any, what: str) -> None:
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise GrammarError(f"{what} is {size} bytes of JSON; the limit is {MAX_SCHEMA_BYTES}")
    depth = schema_depth(schema)
    if depth > MAX_SCHEMA_DEPTH:
        raise GrammarError(f"{what} nests {depth} levels deep; the limit is {MAX_SCHEMA_DEPTH}")


SAFE_INTEGER = 2**53 - 1  # I-JSON (RFC 7493): integers beyond this are not interoperable


# where JSON Schema keeps subschemas: maps of name → schema, lists of schemas, single schemas
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_SCHEMA_LISTS = {"anyOf", "allOf", "oneOf", "prefixItems"}
_SCHEMA_VALUES = {"items", "additionalItems", "additionalProperties", "unevaluatedItems",
                  "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then", "else"}


def decoding_schema(schema: Any) -> Any:
    """The schema decoding follows: a copy in which every answer must end. Integers and numbers
    without bounds get I-JSON's, ±(2**53 − 1), and objects that list their properties but say
    nothing of others get `additionalProperties: false` (xgrammar's strict mode does the same).
    Without these a small model that starts writing "10000…" or inventing keys goes on until
    max_tokens and returns no JSON at all. Whatever validates here validates under the original.
    Only schema positions are visited: a property may well be called "type"."""
    if not isinstance(schema, dict):
        return schema
    bounded = dict(schema)
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            bounded[key] = {name: decoding_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list) or key == "items" and isinstance(value, list):
            bounded[key] = [decoding_schema(sub) for sub in value]
        elif key in _SCHEMA_VALUES:
            bounded[key] = decoding_schema(value)
    if "properties" in bounded and "additionalProperties" not in bounded \
            and "patternProperties" not in bounded:
        bounded["additionalProperties"] = False
    kinds = bounded.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds} if isinstance(kinds, str) else set()
    if kinds & {"integer", "number"}:
        if "minimum" not in bounded and "exclusiveMinimum" not in bounded:
            bounded["minimum"] = -SAFE_INTEGER
        if "maximum" not in bounded and "exclusiveMaximum" not in bounded:
            bounded["maximum"] = SAFE_INTEGER
    return bounded


class Constraint:
    """One sequence's grammar state: the allowed-token mask, and the tokens it accepted."""

    def __init__(self, matcher: llg.LLMatcher, vocab_size: int):
        self._matcher = matcher
        self._vocab_size = vocab_size

    def allowed(self, logits_size: int) -> torch.Tensor:
        """(logits_size,) bool: True where the next token keeps the output in the grammar."""
        # numpy, then one zero-copy view: small torch ops on a busy machine wait for OpenMP
        bits = np.unpackbits(np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8),
                             bitorder="little", count=min(self._vocab_size, logits_size))
        if bits.shape[0] < logits_size:  # the model's padded rows are never allowed
            bits = np.concatenate([bits, np.zeros(logits_size - bits.shape[0], dtype=np.uint8)])
        return torch.from_numpy(bits.view(bool))

    def accept(self, token: int) -> bool:
        """Advance past a sampled token; False if the grammar refuses it (never for a token
        sampled under this constraint's mask)."""
        return self._matcher.consume_token(token)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def matcher(self) -> llg.LLMatcher:
        return self._matcher

    @property
    def done(self) -> bool:
        """The grammar admits nothing more (the output is complete)."""
        return self._matcher.is_stopped()

    @property
    def failed(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


class MaskComputer:
    """The next-token masks of a batch of sequences, computed together by llguidance's own
    thread (which runs outside the GIL): the engine starts them before a forward pass and collects
    them after it, so at batch 16 the masks cost almost nothing on top of the step."""

    def __init__(self) -> None:
        self._executor = llg.LLExecutor(num_threads=1)  # the forward pass has the other cores

    def compute(self, constraints: list[Constraint], logits_size: int) -> np.ndarray:
        """(len(constraints), logits_size) bool: True where the next token keeps each output in
        its grammar; the model's padded rows beyond the vocabulary are never allowed."""
        vocab = min(c.vocab_size for c in constraints)
        bitmask = llg_numpy.allocate_token_bitmask(len(constraints), vocab)
        llg_numpy.fill_next_token_bitmask_par(
            self._executor, [(c.matcher, row) for row, c in enumerate(constraints)], bitmask)
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little", count=min(vocab, logits_size))
        if bits.shape[1] < logits_size:
            bits = np.pad(bits, ((0, 0), (0, logits_size - bits.shape[1])))
        return bits.view(bool)


class GrammarCompiler:
    """Grammars for one model's vocabulary. Building the llguidance tokenizer walks the whole
    vocabulary (~0.2 s), so it happens once, on first use."""

    def __init__(self, make_tokenizer: Any):
        self._make_tokenizer = make_tokenizer
        self._tokenizer: llg.LLTokenizer | None = None

    @property
    def tokenizer(self) -> llg.LLTokenizer:
        if self._tokenizer is None:
            self._tokenizer = self._make_tokenizer()
        return self._tokenizer

    def check(self, lark: str) -> None:
        """Raise GrammarError with llguidance's reason when the grammar cannot be compiled."""
        error = llg.LLMatcher.validate_grammar(lark, self.tokenizer, limits=LIMITS)
        if error:
            raise GrammarError(_plain(error))

    def constraint(self, lark: str) -> Constraint:
        matcher = llg.LLMatcher(self.tokenizer, lark, log_level=0, limits=LIMITS)
        if matcher.is_error():
            raise GrammarError(_plain(matcher.get_error()))
        return Constraint(matcher, self.tokenizer.vocab_size)


def _plain(error: str) -> str:
    """llguidance's message without the grammar it quotes back."""
    return error.split("<state>")[0].split("<grammar>")[0].strip()
