"""Tool formats without a server: a GGUF chat template that renders tools itself (the Hermes
`<tool_call>` blocks of Qwen2.5 and most tool-capable GGUFs) gets its own prompt and parser."""

from __future__ import annotations

import json
from pathlib import Path

from magistral.chat.prompt import TemplatePrompter
from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.chat.tools import HermesToolFormat, TaggedToolFormat, ToolChoice
from magistral.engine.grammar import GrammarCompiler
from magistral.model.load import LoadedModel

HERMES_TEMPLATE = (Path(__file__).parents[1] / "data" / "hermes_tools.jinja").read_text()
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"]}}}


def test_a_template_with_tools_renders_them_itself(tokenizer: GGUFTokenizer) -> None:
    prompter = TemplatePrompter(ChatTemplate(HERMES_TEMPLATE), tokenizer)
    assert isinstance(prompter.tool_format, HermesToolFormat)
    messages = [{"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "abcdefghi", "type": "function",
                     "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
                {"role": "tool", "tool_call_id": "abcdefghi", "name": "add", "content": "5"}]
    text = tokenizer.decode(prompter.encode(messages, reasoning_prompt=False, tools=[ADD]).ids)
    assert f"<tools>\n{json.dumps(ADD)}\n</tools>" in text  # the template's own tool listing
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in text
    assert "user\n<tool_response>\n5\n</tool_response>" in text  # (special tokens not decoded)
    assert "You are an expert in composing functions" not in text  # not our documented format


def test_a_template_without_tools_keeps_the_documented_format(loaded: LoadedModel,
                                                              tokenizer: GGUFTokenizer) -> None:
    prompter = TemplatePrompter(ChatTemplate(loaded.metadata["tokenizer.chat_template"]), tokenizer)
    assert type(prompter.tool_format) is TaggedToolFormat
    text = tokenizer.decode(prompter.encode([{"role": "user", "content": "2 + 3?"}], reasoning_prompt=False,
                                            tools=[ADD]).ids)
    assert "<tool_call>[{" in text and '"name": "add"' in text


def test_hermes_calls_are_parsed_and_constrained(tokenizer: GGUFTokenizer) -> None:
    fmt = HermesToolFormat()
    two = ('Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
           '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>')
    text, calls = fmt.parse(two)
    assert text == "Let me add." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})]
    assert fmt.parse('<tool_call>\n{"name": "add", "arguments": {"a": 2')[1] == []  # cut off: text

    compiler = GrammarCompiler(tokenizer.grammar_tokenizer)

    def follows(output: str, choice: str, parallel: bool = True) -> bool:
        constraint = compiler.constraint(fmt.grammar([ADD], ToolChoice(choice), parallel))
        return all(constraint.accept(t) for t in tokenizer.encode(output, add_bos=False))

    assert follows(two, "auto") and follows("Just text.", "auto")
    assert follows(two.split("\n", 1)[1], "required") and not follows("Just text.", "required")
    assert not follows(two.split("\n", 1)[1], "required", parallel=False)  # one call only
    assert not follows('<tool_call>\n{"name": "add", "arguments": {"a": "two"', "auto")
