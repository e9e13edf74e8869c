"""Clients that run in tests/clients/.venv (see requirements.txt there), one per call:

    python pinned_clients.py CASE    (CASE: instructor-tools, instructor-json-schema, llama-index)

against MAGISTRAL_BASE_URL with MAGISTRAL_API_KEY and MAGISTRAL_MODEL. Prints one JSON object: what
the client returned, the schema it was built from and the request bodies it sent, for
tests/api/test_agent_clients.py to check."""

import json
import os
import sys
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

BASE_URL = os.environ["MAGISTRAL_BASE_URL"]
API_KEY = os.environ["MAGISTRAL_API_KEY"]
MODEL = os.environ["MAGISTRAL_MODEL"]
SENT: list[dict[str, Any]] = []


def _record(request: httpx.Request) -> None:
    SENT.append({"url": str(request.url), "body": json.loads(request.content or b"null")})


def http_client() -> httpx.Client:
    """The openai SDK's own kind of client, recording what it sends."""
    return httpx.Client(event_hooks={"request": [_record]}, timeout=300)


class City(BaseModel):
    """A city and the country it is in."""
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, or the model goes on
    name: str = Field(max_length=20, description="the city's name")
    country: str = Field(max_length=20, description="the country the city is in")
    population_millions: int = Field(ge=0, le=100, description="inhabitants, in millions")


def instructor_case(mode_name: str) -> dict[str, Any]:
    import instructor
    from openai import OpenAI

    client = instructor.from_openai(OpenAI(api_key=API_KEY, base_url=f"{BASE_URL}/v1",
                                           http_client=http_client()),
                                    mode=getattr(instructor.Mode, mode_name))
    city = client.chat.completions.create(
        model=MODEL, response_model=City, max_retries=0, temperature=0, max_tokens=128,
        messages=[{"role": "user", "content": "Describe Paris: its name, country and population."}])
    assert isinstance(city, City)
    return {"object": city.model_dump(), "schema": City.model_json_schema(), "sent": SENT}


WEATHER_CALLS: list[dict[str, Any]] = []


# (no `from __future__ import annotations` in this file: FunctionTool reads these annotations)

def get_weather(city: Annotated[str, Field(max_length=20, description="the city")],
                unit: Literal["celsius", "fahrenheit"]) -> str:
    """Get the current weather in a city."""
    WEATHER_CALLS.append({"city": city, "unit": unit})
    return f"18 degrees {unit} and sunny in {city}"


def llama_index_case() -> dict[str, Any]:
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model=MODEL, api_base=f"{BASE_URL}/v1", api_key=API_KEY, is_chat_model=True,
                     is_function_calling_model=True, context_window=8192, temperature=0, max_tokens=128,
                     http_client=http_client())
    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.predict_and_call([tool], user_msg="What is the weather in Paris?", tool_required=True)
    return {"response": str(response), "calls": WEATHER_CALLS,
            "outputs": [{"tool_name": s.tool_name, "raw_input": s.raw_input, "content": s.content,
                         "is_error": s.is_error} for s in response.sources],
            "schema": tool.metadata.get_parameters_dict(), "sent": SENT}


CASES = {"instructor-tools": lambda: instructor_case("TOOLS"),
         "instructor-json-schema": lambda: instructor_case("JSON_SCHEMA"),
         "llama-index": llama_index_case}

if __name__ == "__main__":
    print(json.dumps(CASES[sys.argv[1]](), default=str))
