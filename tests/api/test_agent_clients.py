"""Agent frameworks and client libraries, current releases used unchanged, against the real server and
the default model: langchain (openai and mistralai), litellm (its mistral/ route), instructor,
llama-index, and the Node.js `openai` and `@mistralai/mistralai` packages.

Constrained decoding is what makes this testable on a 135M model: forced calls always validate against
the tool's parameters and json_schema answers against the schema, whatever the model would rather write.
The schemas say additionalProperties: false and bound their strings, as a careful user's would: without
that the grammar lets the model add properties or lengthen strings until max_tokens cuts the JSON off.

instructor and llama-index run in tests/clients/.venv (made by setup.sh): their current releases pin
jiter<0.15 and openai<3, so they cannot share .venv with the current openai SDK. The Node.js scripts are
in tests/node (npm ci there, by setup.sh). Every client talks to 127.0.0.1 only: proxies that lead
nowhere catch any other request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.conftest import Server

MODEL = "magistral-medium-latest"
TESTS = Path(__file__).resolve().parents[1]
NODE_DIR = TESTS / "node"
CLIENTS_PYTHON = TESTS / "clients" / ".venv" / "bin" / "python"
ASK_WEATHER = "What is the weather in Paris?"
ASK_CITY = "Describe Paris: its name, country and population."
UNKNOWN_MODEL = "no-such-model"
# any request that is not for 127.0.0.1 goes to a proxy that is not there, and fails
LOOPBACK_ONLY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
                 "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm: no price list from GitHub
                 "LANGSMITH_TRACING": "false"}


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=20, description="the city")
    unit: Literal["celsius", "fahrenheit"]


class City(BaseModel):
    """A city and the country it is in."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20, description="the city's name")
    country: str = Field(max_length=20, description="the country the city is in")
    population_millions: int = Field(ge=0, le=100, description="inhabitants, in millions")


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather",
                                                 "description": "Get the current weather in a city.",
                                                 "parameters": WeatherArgs.model_json_schema()}}


def weather(city: str, unit: str) -> str:
    return f"18 degrees {unit} and sunny in {city}"


@pytest.fixture(scope="module", autouse=True)
def loopback_only(server: Server) -> Iterator[None]:
    """The clients built in this process (after the shared server started) see the dead proxies."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK_ONLY.items():
            patch.setenv(name, value)
            patch.delenv(name.lower(), raising=False)
        yield


def check_call(name: str, arguments: str | dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A call names one of `tools` and its arguments validate against that tool's parameters."""
    parameters = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert name in parameters, f"call of {name!r}, not one of the tools {list(parameters)}"
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(args, parameters[name])
    return args


def check_text(text: Any) -> None:
    assert isinstance(text, str) and text.strip(), f"no answer text: {text!r}"


def run_client(argv: list[str], server: Server, cwd: Path) -> dict[str, Any]:
    """A client script's JSON report; the server's URL, key and model in its environment."""
    env = {**os.environ, **LOOPBACK_ONLY, "MAGISTRAL_BASE_URL": server.base_url,
           "MAGISTRAL_API_KEY": server.key, "MAGISTRAL_MODEL": MODEL}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


# --- langchain ---------------------------------------------------------------------------------------

def chat_model(kind: str, server: Server):
    if kind == "openai":
        from langchain_openai import ChatOpenAI
        return ChatOpenAI(model=MODEL, base_url=f"{server.base_url}/v1", api_key=server.key,
                          temperature=0, max_tokens=128, max_retries=0)
    from langchain_mistralai import ChatMistralAI
    return ChatMistralAI(model=MODEL, base_url=f"{server.base_url}/v1", api_key=server.key,
                         temperature=0, max_tokens=128, max_retries=0)


@pytest.mark.parametrize("kind, tool_choice", [("openai", "get_weather"), ("mistralai", "any")])
def test_langchain_tool_call_round_trip(server: Server, kind: str, tool_choice: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    ran: list[dict[str, str]] = []

    @tool(args_schema=WeatherArgs)
    def get_weather(city: str, unit: str) -> str:
        """Get the current weather in a city."""
        ran.append({"city": city, "unit": unit})
        return weather(city, unit)

    llm = chat_model(kind, server)
    messages: list[Any] = [HumanMessage(ASK_WEATHER)]
    asked = llm.bind_tools([get_weather], tool_choice=tool_choice).invoke(messages)
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    assert asked.tool_calls and not asked.invalid_tool_calls
    sent_tools = [convert_to_openai_tool(get_weather)]
    for call in asked.tool_calls:
        check_call(call["name"], call["args"], sent_tools)
    results = [get_weather.invoke(call) for call in asked.tool_calls]  # the agent runs the tool
    assert all(isinstance(r, ToolMessage) for r in results) and len(ran) == len(asked.tool_calls)
    assert [r.tool_call_id for r in results] == [c["id"] for c in asked.tool_calls]
    messages += [asked, *results]
    # the tools are sent again with the result; "none" makes this turn the answer
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    check_text(final.content)
    assert not final.tool_calls and final.response_metadata["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("kind", ["mistralai"])
def test_langchain_structured_output(server: Server, kind: str) -> None:
    """The default method of ChatMistralAI: a forced tool call. (ChatOpenAI's, json_schema through
    the openai SDK, is what instructor's JSON_SCHEMA mode sends: tested below, once for CI's time.)"""
    city = chat_model(kind, server).with_structured_output(City).invoke(ASK_CITY)
    assert isinstance(city, City)
    jsonschema.validate(city.model_dump(), City.model_json_schema())


# --- litellm -----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")  # litellm's own types
@pytest.mark.parametrize("route", ["mistral"])  # its openai/ route is the openai SDK, tested throughout
def test_litellm_tools_and_chat(server: Server, route: str) -> None:
    import litellm

    def complete(**kwargs: Any):
        return litellm.completion(**{"model": f"{route}/{MODEL}", "api_base": f"{server.base_url}/v1",
                                     "api_key": server.key, "temperature": 0, "max_tokens": 128,
                                     "num_retries": 0, **kwargs})

    messages: list[Any] = [{"role": "user", "content": ASK_WEATHER}]
    asked = complete(messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    messages.append(choice.message)
    for call in choice.message.tool_calls:
        assert call.id and call.type == "function"
        args = check_call(call.function.name, call.function.arguments, [WEATHER_TOOL])
        messages.append({"role": "tool", "tool_call_id": call.id, "name": call.function.name,
                         "content": weather(**args)})
    final = complete(messages=messages, tools=[WEATHER_TOOL], tool_choice="none")
    check_text(final.choices[0].message.content)
    assert not final.choices[0].message.tool_calls

    plain = complete(messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=16)
    check_text(plain.choices[0].message.content)
    assert plain.usage.completion_tokens > 0
    streamed = complete(messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=16, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == plain.choices[0].message.content


# --- instructor and llama-index (tests/clients/.venv) --------------------------------------------------

def pinned_client(case: str, server: Server) -> dict[str, Any]:
    if not CLIENTS_PYTHON.exists():
        pytest.fail(f"{CLIENTS_PYTHON} is missing: run ./setup.sh (it installs "
                    "tests/clients/requirements.txt there)")
    return run_client([str(CLIENTS_PYTHON), "pinned_clients.py", case], server, TESTS / "clients")


@pytest.mark.parametrize("mode", ["tools", "json-schema"])
def test_instructor_returns_a_valid_object(server: Server, mode: str) -> None:
    """Mode.TOOLS (a forced call) and Mode.JSON_SCHEMA (response_format json_schema). Mode.JSON
    (json_object plus the schema in the prompt) constrains only to some JSON object: the 135M model
    does not write the schema's object then, so it is not tested here."""
    report = pinned_client(f"instructor-{mode}", server)
    [sent] = report["sent"]  # max_retries=0: one request, answered right the first time
    body = sent["body"]
    if mode == "tools":
        assert body["tool_choice"] == {"type": "function", "function": {"name": "City"}}
        check_call("City", report["object"], body["tools"])
    else:
        assert body["response_format"]["type"] == "json_schema"
        jsonschema.validate(report["object"], body["response_format"]["json_schema"]["schema"])
    jsonschema.validate(report["object"], report["schema"])
    City.model_validate(report["object"])


def test_llama_index_predict_and_call(server: Server) -> None:
    report = pinned_client("llama-index", server)
    [sent] = report["sent"]
    assert sent["body"]["tool_choice"] == "required"
    [output] = report["outputs"]
    assert output["tool_name"] == "get_weather" and not output["is_error"]
    args = check_call("get_weather", output["raw_input"]["kwargs"], sent["body"]["tools"])
    assert report["calls"] == [args]  # the function ran, with the call's arguments
    assert report["response"] == output["content"] == weather(**args)


# --- Node.js: openai and @mistralai/mistralai ------------------------------------------------------------

NODE_SCHEMAS = json.loads((NODE_DIR / "schemas.json").read_text())  # what the scripts send
NODE_TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                                "parameters": NODE_SCHEMAS["weather_parameters"]}}]


@pytest.fixture(scope="module", params=["openai", "mistral"])
def node_report(request: pytest.FixtureRequest, server: Server) -> dict[str, Any]:
    """One run of tests/node/<package>.mjs: what each step returned, or how it failed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("tests/node/node_modules is missing: run ./setup.sh (npm ci --prefix tests/node)")
    return run_client([node, f"{request.param}.mjs"], server, NODE_DIR)


def node_step(report: dict[str, Any], step: str) -> dict[str, Any]:
    result = report[step]
    assert "failed" not in result, f"{step}: {result['failed']}\n{result.get('stack')}"
    return result


def test_node_tool_call_round_trip(node_report: dict[str, Any]) -> None:
    result = node_step(node_report, "tools")
    assert result["finish_reason"] == "tool_calls" and result["tool_calls"]
    for call in result["tool_calls"]:
        assert call["id"] and call["type"] == "function"
        check_call(call["function"]["name"], call["function"]["arguments"], NODE_TOOLS)
    check_text(result["final"]["content"])
    assert result["final_finish_reason"] in ("stop", "length")


def test_node_json_schema(node_report: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(node_step(node_report, "json_schema")["content"]), NODE_SCHEMAS["city"])


def test_node_streaming(node_report: dict[str, Any]) -> None:
    text = node_step(node_report, "stream_text")
    check_text(text["text"])
    assert text["chunks"] > 2 and text["finish_reason"] in ("stop", "length")
    counts = [v for v in text["usage"].values() if isinstance(v, int)]  # details are objects
    assert counts and set(counts) != {0}
    call = node_step(node_report, "stream_tool_call")
    assert call["finish_reason"] == "tool_calls" and len(call["calls"]) >= 1
    for merged in call["calls"]:
        assert merged["id"]
        check_call(merged["name"], merged["arguments"], NODE_TOOLS)


def test_node_error_shows_the_server_message(node_report: dict[str, Any], server: Server) -> None:
    body = server.post("/v1/chat/completions", {"model": UNKNOWN_MODEL,
                                                "messages": [{"role": "user", "content": "hi"}]})
    assert body.status_code == 404
    error = node_step(node_report, "error")
    assert error["raised"] and error["status"] == 404
    assert body.json()["message"] in error["message"], error  # not "no body" or a bare status
    if "not_found" in error:  # openai: its NotFoundError, with the code and param of the body
        assert error["not_found"] and error["code"] == "model_not_found" and error["param"] == "model"
