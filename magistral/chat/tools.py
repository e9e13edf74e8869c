"""Function calling: how tools reach the prompt, the grammar a call must follow, and how calls
are read back out of the generated text.

Two formats:
- Mistral-family checkpoints (`MistralToolFormat`): mistral-common's, for the tokenizer's
  version: `[AVAILABLE_TOOLS]` in the prompt, `[TOOL_CALLS]name[ARGS]{...}` out (v11+), or
  `[TOOL_CALLS][{"name", "arguments"}]` (older), with mistral-common's own grammar factory.
- Chat templates that render tools themselves and ask for Hermes-style blocks,
  `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` one per call (Qwen2.5, Hermes,
  SmolLM3 and most tool-capable GGUFs: `HermesToolFormat`): the template renders tools, calls
  and results, the model's own prompt format.
- Every other chat template (`TaggedToolFormat`), documented in the README: the tools as JSON in
  the system prompt and calls written `<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>`,
  the format SmolLM2-Instruct was trained on.
In both, decoding is constrained once a call starts: the call's name is one of the tools and its
arguments validate against that tool's `parameters` schema.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from magistral.engine.grammar import decoding_schema

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ANY_OBJECT: dict[str, Any] = {"type": "object"}
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass
class ToolChoice:
    """What the client allows: `auto` (the model decides), `none` (no call), `required` (at
    least one call; `names` restricts which functions, for a named tool_choice)."""
    mode: Literal["auto", "none", "required"]
    names: list[str] | None = None


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text

    def api(self, index: int) -> dict[str, Any]:
        return {"id": new_call_id(), "type": "function", "index": index,
                "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    """Mistral's tool-call ids: 9 alphanumerics."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


def function_of(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"]


def chosen_tools(tools: list[dict[str, Any]], choice: ToolChoice) -> list[dict[str, Any]]:
    if choice.names is None:
        return tools
    return [t for t in tools if function_of(t)["name"] in choice.names]


def _schema(tool: dict[str, Any]) -> dict[str, Any]:
    return decoding_schema(function_of(tool).get("parameters") or ANY_OBJECT)


class TaggedToolFormat:
    """`<tool_call>[{"name": ..., "arguments": {...}}, ...]</tool_call>` after optional text."""

    trigger = "<tool_call>"
    end = "</tool_call>"
    supported = True
    native = False  # the chat template knows nothing of tools: the messages carry them as text

    def system_prompt(self, tools: list[dict[str, Any]]) -> str:
        listed = json.dumps([{"name": f["name"], "description": f.get("description", ""),
                              "parameters": f.get("parameters") or ANY_OBJECT}
                             for f in map(function_of, tools)])
        return ("You are an expert in composing functions. You are given a question and a set of possible "
                "functions. Based on the question, you will need to make one or more function/tool calls "
                "to achieve the purpose. If none of the functions can be used, answer in plain text.\n\n"
                f"You have access to the following tools:\n<tools>{listed}</tools>\n\n"
                "To call tools, answer with exactly this format:\n"
                '<tool_call>[{"name": "func_name1", "arguments": {"argument1": "value1"}}, '
                "... (more calls as required)]</tool_call>")

    def render_calls(self, calls: list[dict[str, Any]]) -> str:
        listed = [{"name": c["function"]["name"], "arguments": arguments_object(c["function"]["arguments"])}
                  for c in calls]
        return f"{self.trigger}{json.dumps(listed)}{self.end}"

    def render_result(self, content: str) -> str:
        return f"<tool_response>\n{content}\n</tool_response>"

    def grammar(self, tools: list[dict[str, Any]], choice: ToolChoice, parallel: bool,
                json_schema: dict[str, Any] | None = None) -> str | None:
        """A Lark grammar for the whole answer, or None when nothing constrains it. Text may not
        contain the trigger: once `<tool_call>` is written, a well-formed call must follow."""
        if choice.mode == "none" or not tools:
            return json_grammar(json_schema) if json_schema is not None else None
        alternatives = " | ".join(f"fn_{i}" for i in range(len(chosen_tools(tools, choice))))
        functions = "\n".join(
            f'fn_{i}: "{{\\"name\\": \\"{function_of(t)["name"]}\\", \\"arguments\\": " '
            f'%json {json.dumps(_schema(t))} "}}"'
            for i, t in enumerate(chosen_tools(tools, choice)))
        if json_schema is not None:  # a JSON answer or calls; free text would defeat the schema
            answer = json.dumps(decoding_schema(json_schema))
            start = f'start: WS? %json {answer} | calls\ncalls: "{self.trigger}" body'
        elif choice.mode == "required":
            start = f'start: calls\ncalls: "{self.trigger}" body'
        else:
            start = f'start: TEXT | calls\ncalls: trigger body\ntrigger[lazy]: TEXT "{self.trigger}"'
        return (f"%llguidance {{}}\n{start}\n{self._body(parallel)}\n"
                f"call: {alternatives}\n{functions}\n"
                f"TEXT: /(.|\\n)*/ & ~/(?s:.*){re.escape(self.trigger)}(?s:.*)/\n"
                "WS: /[ \\t\\r\\n]{1,8}/\n")

    def _body(self, parallel: bool) -> str:
        """The grammar rule for what follows the trigger: a JSON list of calls, then the end."""
        more = '(WS? "," WS? call)*' if parallel else ""
        return f'body: "[" WS? call {more} WS? "]" "{self.end}"'

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        """(text before the calls, the calls). Text that is no complete call stays text."""
        start = text.find(self.trigger)
        if start < 0:
            return text, []
        try:
            listed, end = json.JSONDecoder().raw_decode(text, start + len(self.trigger))
            if not isinstance(listed, list):
                listed = [listed]
            calls = [ParsedCall(c["name"], json.dumps(c["arguments"])) for c in listed]
        except (ValueError, TypeError, KeyError):
            return text, []
        if not text[end:].strip().startswith(self.end):
            return text, []
        return text[:start].strip(), calls


class HermesToolFormat(TaggedToolFormat):
    """`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call, for chat
    templates that render tools, calls (`tool_calls`) and results (role `tool`) themselves."""

    native = True

    def _body(self, parallel: bool) -> str:
        more = f'(WS? "{self.trigger}" WS? call WS? "{self.end}")*' if parallel else ""
        return f'body: WS? call WS? "{self.end}" {more}'

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        start = text.find(self.trigger)
        if start < 0:
            return text, []
        calls, position = [], start
        try:
            while position < len(text):
                if not text.startswith(self.trigger, position):
                    return text, []
                body = position + len(self.trigger)
                body += len(text[body:]) - len(text[body:].lstrip())
                call, end = json.JSONDecoder().raw_decode(text, body)
                calls.append(ParsedCall(call["name"], json.dumps(call["arguments"])))
                end += len(text[end:]) - len(text[end:].lstrip())
                if not text.startswith(self.end, end):
                    return text, []
                position = end + len(self.end)
                position += len(text[position:]) - len(text[position:].lstrip())
        except (ValueError, TypeError, KeyError):
            return text, []
        return text[:start].strip(), calls


def native_tool_format(template_source: str) -> bool:
    """Whether a chat template renders tools itself in the Hermes format."""
    return "tools" in template_source and "<tool_call>" in template_source


class MistralToolFormat:
    """mistral-common's tool calls for a tekken tokenizer (markers decoded as visible text)."""

    trigger = "[TOOL_CALLS]"

    def __init__(self, mistral: Any):
        from mistral_common.guidance.grammar_factory import GrammarFactory

        self._factory = GrammarFactory(mistral) if GrammarFactory.is_supported(mistral) else None
        self.supported = self._factory is not None  # tekken v11+: calls can be constrained

    @property
    def llg_tokenizer(self) -> Any:
        return self._factory.llg_tokenizer if self._factory else None

    def grammar(self, tools: list[dict[str, Any]], choice: ToolChoice, parallel: bool,
                json_schema: dict[str, Any] | None = None) -> str | None:
        from mistral_common.protocol.instruct.messages import UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest, ResponseFormat

        if self._factory is None:
            raise ValueError("constrained decoding needs a tekken tokenizer of version v11 or later")
        if json_schema is None and (choice.mode == "none" or not tools):
            return None
        format_ = ResponseFormat(type="text") if json_schema is None else ResponseFormat(
            type="json_schema", json_schema={"name": "answer", "schema": decoding_schema(json_schema),
                                             "strict": True})
        mode = choice.mode
        if json_schema is not None and mode == "required":
            mode = "auto"  # mistral-common unions a JSON answer with calls only under auto
        request = ChatCompletionRequest(
            messages=[UserMessage(content="-")], response_format=format_,
            tools=[_strict(t) for t in chosen_tools(tools, choice)] or None,
            tool_choice="none" if not tools else mode, parallel_tool_calls=parallel)
        return self._factory.get_grammar_for_chat_request(request, self._factory.select_jinja_template())

    def parse(self, text: str) -> tuple[str, list[ParsedCall]]:
        parts = text.split(self.trigger)
        content, calls = parts[0], []
        try:
            for part in parts[1:]:
                if "[ARGS]" in part:  # v11+: name[ARGS]{...}, or name[CALL_ID]id[ARGS]{...}
                    name, args = part.split("[ARGS]", 1)
                    name = name.split("[CALL_ID]")[0].strip()
                    calls.append(ParsedCall(name, json.dumps(json.loads(args))))
                else:  # v2-v7: a JSON list of {"name", "arguments"}
                    listed = json.loads(part)
                    calls += [ParsedCall(c["name"], json.dumps(c["arguments"]))
                              for c in (listed if isinstance(listed, list) else [listed])]
        except (ValueError, TypeError, KeyError):
            return text, []
        return content.strip(), calls


def _strict(tool: dict[str, Any]) -> dict[str, Any]:
    """mistral-common constrains only strict tools' arguments; we constrain every call."""
    function = dict(function_of(tool), strict=True, parameters=_schema(tool))
    return {"type": "function", "function": function}


def json_grammar(schema: dict[str, Any]) -> str:
    """A grammar whose sentences are JSON documents valid under `schema` (as decoding bounds it),
    after at most a little leading whitespace."""
    return (f"%llguidance {{}}\nstart: WS? %json {json.dumps(decoding_schema(schema))}\n"
            "WS: /[ \\t\\r\\n]{1,8}/\n")


def arguments_object(arguments: str | dict[str, Any]) -> Any:
    """A call's arguments as the object they encode (API clients send a JSON string)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


class ToolCallSplitter:
    """Streams the text before a call; from the trigger on, holds everything back for parsing
    once generation ends. A suffix that may begin the trigger is held until it is decided."""

    def __init__(self, trigger: str):
        self.trigger = trigger
        self.held = ""
        self.calling = False

    def feed(self, delta: str) -> str:
        if self.calling:
            self.held += delta
            return ""
        text = self.held + delta
        index = text.find(self.trigger)
        if index >= 0:
            self.calling, self.held = True, text[index:]
            return text[:index]
        keep = next((n for n in range(min(len(text), len(self.trigger) - 1), 0, -1)
                     if self.trigger.startswith(text[-n:])), 0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str:
        """End of generation outside a call: the held-back text was text after all."""
        if self.calling:
            return ""
        held, self.held = self.held, ""
        return held
