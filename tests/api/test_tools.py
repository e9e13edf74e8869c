"""Function calling through the real server with the official SDKs: the default model (our
documented tagged format), the same model under a chat template that renders tools itself
(Hermes `<tool_call>` blocks, as Qwen2.5's does), and a tiny Mistral-family checkpoint
(mistral-common's format)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import Server, start_server, stop_server

MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers",
                                           "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _valid(name: str, arguments: str) -> None:
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


NAMED = {"type": "function", "function": {"name": "add"}}


@pytest.mark.parametrize("tool_choice", ["required", "any", NAMED])
def test_forced_calls_are_valid_calls(server: Server, tool_choice: Any) -> None:
    response = server.post("/v1/chat/completions", {"model": MODEL, "messages": ASK, "tools": TOOLS,
                                                    "tool_choice": tool_choice, "temperature": 0})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert calls and choice["message"]["content"] == ""
    for call in calls:
        assert len(call["id"]) == 9 and call["id"].isalnum() and call["type"] == "function"
        _valid(call["function"]["name"], call["function"]["arguments"])
    if isinstance(tool_choice, dict):
        assert {c["function"]["name"] for c in calls} == {"add"}


@pytest.fixture(scope="module")
def hermes_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    template = Path(__file__).parents[1] / "data" / "hermes_tools.jinja"
    srv = start_server(tmp_path_factory.mktemp("hermes"), "--chat-template", str(template),
                       "--no-embedding-model", "--max-active", "4")
    yield srv
    stop_server(srv)


def test_a_template_that_renders_tools_gets_calls_in_its_own_format(hermes_server: Server) -> None:
    """The template's own prompt goes in, its `<tool_call>` blocks come out as tool_calls, whole
    and streamed, and the turn with the tool's result is rendered by the template too."""
    import openai

    client = openai.OpenAI(base_url=f"{hermes_server.base_url}/v1", api_key=hermes_server.key, max_retries=0)
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                              temperature=0, max_tokens=200)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        _valid(call.function.name, call.function.arguments)
    streamed = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                              temperature=0, max_tokens=200, stream=True)
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        (c.function.name, c.function.arguments) for c in choice.message.tool_calls]
    first = choice.message.tool_calls[0]
    follow_up = [*ASK, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": first.id, "content": "18 degrees"}]
    answer = client.chat.completions.create(model=MODEL, messages=follow_up, tools=TOOLS, tool_choice="none",
                                            max_tokens=20, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
    assert answer.usage.prompt_tokens > response.usage.prompt_tokens  # the call and result are in it


def test_openai_sdk_tool_round_trip(openai_client) -> None:
    """Call → the tool's result sent back (tools re-sent, as agents do) → a text answer."""
    first = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                                  tool_choice="required", temperature=0)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.tool_calls
    history = [*ASK, message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": call.id, "name": call.function.name, "content": "18 degrees"}
                for call in message.tool_calls]
    final = openai_client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS,
                                                  tool_choice="none", temperature=0, max_tokens=30)
    assert final.choices[0].message.tool_calls is None
    assert isinstance(final.choices[0].message.content, str) and final.choices[0].message.content


def test_openai_sdk_streams_tool_calls(openai_client) -> None:
    stream = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                                   tool_choice="required", temperature=0, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": "", "id": ""})
            call["id"] += delta.id or ""
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        assert len(call["id"]) == 9
        _valid(call["name"], call["arguments"])


def test_mistral_sdk_calls_whole_and_streamed(mistral) -> None:
    response = mistral.chat.complete(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="any", temperature=0)
    calls = response.choices[0].message.tool_calls
    assert response.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        _valid(call.function.name, call.function.arguments)
    streamed = []
    events = mistral.chat.stream(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="any", temperature=0)
    for event in events:
        streamed += event.data.choices[0].delta.tool_calls or []
    assert streamed
    for call in streamed:
        _valid(call.function.name, call.function.arguments)


def test_tool_choice_none_and_auto_answer_text_or_valid_calls(openai_client) -> None:
    none = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                                 temperature=0, max_tokens=20)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason != "tool_calls"
    auto = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0,
                                                 max_tokens=60)
    for call in auto.choices[0].message.tool_calls or []:
        _valid(call.function.name, call.function.arguments)
    assert "<tool_call>" not in (auto.choices[0].message.content or "")


def test_single_call_when_parallel_calls_are_off(server: Server) -> None:
    response = server.post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris and in Rome?"}],
        "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, "temperature": 0})
    assert len(response.json()["choices"][0]["message"]["tool_calls"]) == 1


@pytest.mark.parametrize("change, status, param", [
    ({"tools": [{"type": "function", "function": {"name": "bad name!", "parameters": ADD}}]}, 422,
     "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]}, 400,
     "tools[0].function.parameters"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400, "tool_choice"),
    ({"tool_choice": "required"}, 400, "tool_choice"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, 400, "tools"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "abcdefghi", "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "zzzzzzzzz", "content": "3"}]}, 400, "messages"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "abcdefghi", "content": "3"}]}, 400, "messages"),
])
def test_bad_tool_requests_are_refused_clearly(server: Server, change: dict, status: int, param: str) -> None:
    response = server.post("/v1/chat/completions", {"model": MODEL, "messages": ASK, **change})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error" and body["param"] == param
    assert body["error"]["message"] == body["message"]
    still = server.post("/v1/chat/completions", {"model": MODEL, "messages": ASK, "max_tokens": 1})
    assert still.status_code == 200


def test_model_card_says_function_calling(openai_client) -> None:
    card = openai_client.models.retrieve(MODEL).model_dump()
    assert card["capabilities"]["function_calling"] is True


# --- a Mistral-family checkpoint: mistral-common's prompt and [TOOL_CALLS] format ----------------

def test_mistral_prompt_with_tools_equals_mistral_common(mistral3_checkpoint) -> None:
    from mistral_common.protocol.instruct.messages import AssistantMessage, ToolMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, Tool, ToolCall
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from magistral.chat.mistral_prompt import MistralPrompter

    tekken = mistral3_checkpoint / "tekken.json"
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
                {"role": "tool", "tool_call_id": "abcdefghi", "name": "get_weather", "content": "18"}]
    ours = MistralPrompter(tekken).encode(messages, reasoning_prompt=False, tools=TOOLS).ids
    reference = MistralTokenizer.from_file(str(tekken)).encode_chat_completion(ChatCompletionRequest(
        tools=[Tool.model_validate(t) for t in TOOLS],
        messages=[UserMessage(content="Weather in Paris?"),
                  AssistantMessage(tool_calls=[ToolCall(id="abcdefghi", function=FunctionCall(
                      name="get_weather", arguments='{"city": "Paris", "unit": "celsius"}'))]),
                  ToolMessage(tool_call_id="abcdefghi", name="get_weather", content="18")])).tokens
    assert ours == reference


def test_mistral_checkpoint_returns_tool_calls(vision_server: Server) -> None:
    """Random weights, but the grammar makes the model write [TOOL_CALLS]name[ARGS]{...}."""
    name = _first_model(vision_server)
    for stream in (False, True):
        response = vision_server.post("/v1/chat/completions", {
            "model": name, "messages": ASK, "tools": TOOLS, "tool_choice": "any", "max_tokens": 60,
            "temperature": 0, "stream": stream})
        assert response.status_code == 200, response.text
        if stream:
            chunks = [json.loads(line[6:]) for line in response.text.splitlines()
                      if line.startswith("data: {")]
            calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls") or []]
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            choice = response.json()["choices"][0]
            calls, finish = choice["message"]["tool_calls"] or [], choice["finish_reason"]
        if finish == "length":  # random weights may ramble inside a string until max_tokens
            continue
        assert finish == "tool_calls" and calls
        for call in calls:
            _valid(call["function"]["name"], call["function"]["arguments"])


def _first_model(server: Server) -> str:
    import httpx
    return httpx.get(f"{server.base_url}/v1/models", headers=server.auth()).json()["data"][0]["id"]


def test_reasoning_checkpoint_thinking_chunks_or_reasoning_content(vision_server: Server) -> None:
    """[THINK] forced by logit_bias: Mistral's thinking chunks by default, the OpenAI-world
    `reasoning_content` string when the request asks for it."""
    from magistral.chat.tekken import V13_EXTRA

    think = next(rank for rank, name in V13_EXTRA.items() if name == "[THINK]")
    body = {"model": _first_model(vision_server), "messages": ASK, "max_tokens": 4, "temperature": 0,
            "logit_bias": {str(think): 100}}
    default = vision_server.post("/v1/chat/completions", body).json()["choices"][0]["message"]
    assert default["content"][0]["type"] == "thinking" and "reasoning_content" not in default
    openai = vision_server.post("/v1/chat/completions", {**body, "reasoning_format": "openai"}).json()
    message = openai["choices"][0]["message"]
    assert isinstance(message["content"], str) and message["reasoning_content"]
    streamed = vision_server.post("/v1/chat/completions",
                                  {**body, "reasoning_format": "openai", "stream": True})
    deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in streamed.text.splitlines()
              if line.startswith("data: {")]
    assert any(d.get("reasoning_content") for d in deltas)
    assert all(isinstance(d.get("content", ""), str) for d in deltas)
