"""Constrained decoding's pieces without a server: the schema decoding follows, and masks."""

from __future__ import annotations

import json

import jsonschema

from magistral.chat.tokenizer import GGUFTokenizer
from magistral.chat.tools import TaggedToolFormat, ToolChoice, json_grammar
from magistral.engine.grammar import SAFE_INTEGER, GrammarCompiler, MaskComputer, decoding_schema


def test_decoding_schema_bounds_numbers_and_closes_objects_only_where_schemas_are() -> None:
    schema = {"type": "object", "properties": {"type": {"type": "string"}, "n": {"type": "integer"},
                                               "items": {"type": "array", "items": {"type": "number"}}},
              "$defs": {"p": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}}}}
    out = decoding_schema(schema)
    assert out["properties"]["type"] == {"type": "string"}  # a property called "type" is a property
    assert out["properties"]["n"]["maximum"] == SAFE_INTEGER and out["additionalProperties"] is False
    assert out["properties"]["items"]["items"]["minimum"] == -SAFE_INTEGER
    assert out["$defs"]["p"]["properties"]["x"]["maximum"] == SAFE_INTEGER
    assert decoding_schema({"type": "integer", "minimum": 3}) == {"type": "integer", "minimum": 3,
                                                                  "maximum": SAFE_INTEGER}
    assert schema["properties"]["n"] == {"type": "integer"}  # the client's schema is untouched


def test_masks_admit_exactly_the_grammar(tokenizer: GGUFTokenizer) -> None:
    compiler = GrammarCompiler(tokenizer.grammar_tokenizer)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    constraint = compiler.constraint(json_grammar(schema))
    text = ""
    for token in tokenizer.encode('{"a": 12}', add_bos=False):
        allowed = constraint.allowed(tokenizer.vocab_size + 7)  # a padded head: extra rows refused
        assert allowed[token] and not allowed[-7:].any()
        assert constraint.accept(token)
        text += tokenizer.decode([token])
    assert constraint.done or constraint.allowed(tokenizer.vocab_size)[sorted(tokenizer.stop_ids)[0]]
    jsonschema.validate(json.loads(text), schema)
    refused = compiler.constraint(json_grammar(schema))
    assert not refused.allowed(tokenizer.vocab_size)[tokenizer.encode("hello", add_bos=False)[0]]


def test_batched_masks_equal_each_sequences_own(tokenizer: GGUFTokenizer) -> None:
    """The engine computes a batch's masks together, beside the forward pass: each row must be
    exactly what that sequence's grammar allows, whatever state the others are in."""
    compiler = GrammarCompiler(tokenizer.grammar_tokenizer)
    schemas = [{"type": "integer"}, {"type": "array", "items": {"type": "string"}}, {"enum": ["yes", "no"]}]
    constraints = [compiler.constraint(json_grammar(s)) for s in schemas]
    for constraint, prefix in zip(constraints, ["12", '["a", "b', ""], strict=True):
        assert all(constraint.accept(t) for t in tokenizer.encode(prefix, add_bos=False))
    width = tokenizer.vocab_size + 5
    masks = MaskComputer().compute(constraints, width)
    assert masks.shape == (3, width) and not masks[:, -5:].any()
    for row, constraint in enumerate(constraints):
        assert (masks[row] == constraint.allowed(width).numpy()).all()
    assert len({masks[row].sum() for row in range(3)}) == 3  # three different states


def test_tool_grammar_keeps_text_free_until_the_call_marker(tokenizer: GGUFTokenizer) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
    fmt = TaggedToolFormat()
    compiler = GrammarCompiler(tokenizer.grammar_tokenizer)

    def follows(text: str, choice: str) -> bool:
        constraint = compiler.constraint(fmt.grammar(tools, ToolChoice(choice), parallel=True))
        return all(constraint.accept(t) for t in tokenizer.encode(text, add_bos=False))

    call = '<tool_call>[{"name": "f", "arguments": {"x": 1}}]</tool_call>'
    assert follows("Any text at all.", "auto") and follows("Sure. " + call, "auto")
    assert not follows('Sure. <tool_call>[{"name": "g"', "auto")  # once called, only real calls
    assert follows(call, "required") and not follows("Any text", "required")
    assert fmt.parse("Sure. " + call)[1][0].arguments == '{"x": 1}'
