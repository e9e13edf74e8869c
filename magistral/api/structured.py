"""Tools and response_format → what the prompt shows, the grammar the output follows, and
whether calls are read back out of it. Every refusal is a 400 naming the bad part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from mistral_common.exceptions import MistralCommonException
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.api.schemas import AssistantMessage, ChatCompletionRequest, ToolMessage
from magistral.chat.tools import ParsedCall, ToolChoice
from magistral.engine.grammar import Constraint, GrammarError, check_schema_size
from magistral.engine.registry import ServedModel

JSON_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass
class OutputPlan:
    tools: list[dict[str, Any]] = field(default_factory=list)  # shown in the prompt
    choice: ToolChoice = field(default_factory=lambda: ToolChoice("auto"))
    parallel: bool = True
    json_schema: dict[str, Any] | None = None  # the answer must be JSON valid under it

    @property
    def calls_possible(self) -> bool:
        return bool(self.tools) and self.choice.mode != "none"

    def grammar(self, model: ServedModel) -> str | None:
        return model.prompter.tool_format.grammar(self.tools, self.choice, self.parallel, self.json_schema)

    def read(self, model: ServedModel, text: str) -> tuple[str, list[ParsedCall]]:
        """(content, calls) of a finished answer."""
        if not self.calls_possible:
            return text, []
        return model.prompter.tool_format.parse(text)


def _check_schema(schema: Any, param: str) -> None:
    if not isinstance(schema, dict):
        raise APIError(400, f"{param} must be a JSON schema object", param=param)
    try:
        check_schema_size(schema, param)
        validator_for(schema).check_schema(schema)
    except GrammarError as exc:
        raise APIError(400, str(exc), param=param) from exc
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise APIError(400, f"{param} is not a valid JSON schema{f' at {where}' if where else ''}: "
                       f"{exc.message}", param=param) from exc
    except RecursionError as exc:
        raise APIError(400, f"{param} nests too deeply", param=param) from exc


def _choice(req: ChatCompletionRequest, names: list[str]) -> ToolChoice:
    choice = req.tool_choice
    if isinstance(choice, str):
        if choice in ("any", "required") and not names:
            raise APIError(400, f"tool_choice '{choice}' needs tools", param="tool_choice")
        return ToolChoice("required" if choice in ("any", "required") else choice)  # type: ignore[arg-type]
    if choice.function.name not in names:
        raise APIError(400, f"tool_choice names function '{choice.function.name}', which is not among "
                       f"the tools ({', '.join(names) or 'none given'})", param="tool_choice")
    return ToolChoice("required", [choice.function.name])


def _check_tool_messages(req: ChatCompletionRequest) -> None:
    """A tool result answers a call the assistant made (by id, when both carry one)."""
    asked: set[str] = set()
    for i, message in enumerate(req.messages):
        if isinstance(message, AssistantMessage) and message.tool_calls:
            asked = {c.id for c in message.tool_calls if c.id}
        elif isinstance(message, ToolMessage) and message.tool_call_id and asked \
                and message.tool_call_id not in asked:
            raise APIError(400, f"messages[{i}]: tool_call_id '{message.tool_call_id}' matches no call of "
                           "the assistant message before it", param="messages")


def output_plan(req: ChatCompletionRequest, model: ServedModel) -> OutputPlan:
    _check_tool_messages(req)
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: two functions share a name", param="tools")
    for i, tool in enumerate(tools):
        if "parameters" in tool["function"]:
            _check_schema(tool["function"]["parameters"], f"tools[{i}].function.parameters")
    plan = OutputPlan(tools=tools, choice=_choice(req, names), parallel=req.parallel_tool_calls)
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_object":
        plan.json_schema = JSON_OBJECT
    elif fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_definition if fmt.json_schema else None
        if schema is None:
            raise APIError(400, "response_format json_schema needs json_schema.schema",
                           param="response_format")
        _check_schema(schema, "response_format.json_schema.schema")
        plan.json_schema = schema
    if (plan.calls_possible or plan.json_schema is not None) and not model.function_calling:
        raise APIError(400, f"Model '{model.id}' cannot constrain its output (tools, response_format): "
                       "its tokenizer is older than tekken v11",
                       param="tools" if tools else "response_format")
    return plan


def upstream_fields(req: ChatCompletionRequest) -> dict[str, Any]:
    """What an upstream server needs to constrain its own output, in OpenAI's names."""
    fields: dict[str, Any] = {}
    if req.tools:
        choice = req.tool_choice
        fields["tool_choice"] = "required" if choice == "any" else \
            choice if isinstance(choice, str) else choice.model_dump(exclude_none=True)
        fields["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None:
        fields["response_format"] = req.response_format.model_dump(exclude_none=True, by_alias=True)
    return fields


async def constraints(plan: OutputPlan, model: ServedModel, n: int) -> list[Constraint | None]:
    """One grammar state per choice, or Nones when the output is free."""
    try:
        grammar = plan.grammar(model)
    except (ValueError, MistralCommonException) as exc:
        raise APIError(400, f"Invalid tools or response_format: {exc}", param="tools") from exc
    if grammar is None:
        return [None] * n

    def compile_all() -> list[Constraint | None]:
        return [model.prompter.grammar.constraint(grammar) for _ in range(n)]

    try:
        return await run_in_threadpool(compile_all)
    except GrammarError as exc:
        param = "response_format" if plan.json_schema is not None else "tools"
        raise APIError(400, f"The schema cannot be used for constrained decoding: {exc}",
                       param=param) from exc
