"""Structured outputs on the real server and the default model: whatever the 135M model would
rather write, constrained decoding makes every answer parse and validate."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest

from tests.conftest import Server

MODEL = "smollm2-135m-instruct"

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                              "age": {"type": "integer"}},
             "required": ["name", "age"], "additionalProperties": False},
    "bounded_numbers": {"type": "object", "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 3, "maximum": 7}}, "required": ["score", "count"]},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
             "required": ["color"]},
    "const": {"type": "object", "properties": {"kind": {"const": "point"}, "x": {"type": "integer"}},
              "required": ["kind", "x"]},
    "boolean": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    "array_of_ints": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    "array_in_object": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}},
        "required": ["tags"]},
    "nested": {"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": "string", "maxLength": 30}},
        "required": ["id", "email"]}}, "required": ["user"]},
    "deeply_nested": {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "object", "properties": {"c": {"type": "integer"}}, "required": ["c"]}},
        "required": ["b"]}}, "required": ["a"]},
    "any_of": {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer"},
                                                                     {"type": "string", "maxLength": 8}]}},
               "required": ["value"]},
    "one_of_objects": {"anyOf": [
        {"type": "object", "properties": {"circle": {"type": "number"}}, "required": ["circle"]},
        {"type": "object", "properties": {"square": {"type": "number"}}, "required": ["square"]}]},
    "pattern": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["zip"]},
    "date_pattern": {"type": "object", "properties": {
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}, "required": ["date"]},
    "nullable": {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 12}},
                 "required": ["note"]},
    "refs": {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"},
                                                                   "y": {"type": "integer"}},
                                 "required": ["x", "y"]}},
             "type": "object", "properties": {"start": {"$ref": "#/$defs/point"},
                                              "end": {"$ref": "#/$defs/point"}},
             "required": ["start", "end"]},
    "list_of_objects": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "maxLength": 6},
                                         "qty": {"type": "integer"}},
        "required": ["sku", "qty"], "additionalProperties": False}},
    "string_length": {"type": "object", "properties": {"code": {"type": "string", "minLength": 3,
                                                                "maxLength": 5}}, "required": ["code"]},
    "multiple_required": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0}}, "required": ["city", "country", "population"]},
    "exclusive_bounds": {"type": "object", "properties": {
        "t": {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1}}, "required": ["t"]},
    "top_level_string": {"type": "string", "enum": ["yes", "no"]},
    "top_level_integer": {"type": "integer", "minimum": 10, "maximum": 99},
    "keyword_names": {"type": "object", "required": ["type", "items"],  # properties named like keywords
                      "properties": {"type": {"enum": ["a", "b"]},
                                     "items": {"type": "integer", "minimum": 0, "maximum": 9}}},
    "additional_properties_typed": {"type": "object", "maxProperties": 2,
                                    "additionalProperties": {"type": "integer"}},
}

PROMPT = "Answer with JSON only. Describe something that fits: {name}."


def _ask(server: Server, name: str, schema: dict[str, Any], stream: bool) -> tuple[str, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT.format(name=name)}],
            "temperature": 0, "max_tokens": 200, "stream": stream,
            "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                                       "strict": True}}}
    response = server.post("/v1/chat/completions", body, timeout=600)
    assert response.status_code == 200, response.text
    if not stream:
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    text, finish = "", None
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            choice = json.loads(line[6:])["choices"][0]
            text += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
    return text, finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_schema_gives_valid_json(server: Server, stream: bool) -> None:
    assert len(SCHEMAS) >= 20
    with ThreadPoolExecutor(8) as pool:  # answered in batches, as clients would send them
        answers = dict(zip(SCHEMAS, pool.map(lambda item: _ask(server, *item, stream), SCHEMAS.items()),
                           strict=True))
    for name, (text, finish) in answers.items():
        assert finish == "stop", (name, finish, text)
        jsonschema.validate(json.loads(text), SCHEMAS[name])


def test_json_object_mode(openai_client) -> None:
    # free-form JSON has no bound a grammar can hold a looping model to: ask for a small object
    response = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Reply with a JSON object with the keys name and "
                                                           "age of a cat."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_openai_parse_with_a_pydantic_model(openai_client) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    completion = openai_client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about Paris."}],
        response_format=City, temperature=0, max_tokens=200)
    city = completion.choices[0].message.parsed
    assert isinstance(city, City)


def test_mistral_chat_parse(mistral) -> None:
    from pydantic import BaseModel

    class Book(BaseModel):
        title: str
        year: int

    response = mistral.chat.parse(model=MODEL, messages=[{"role": "user", "content": "A famous book?"}],
                                  response_format=Book, temperature=0, max_tokens=200)
    assert isinstance(response.choices[0].message.parsed, Book)


@pytest.mark.parametrize("schema, says", [
    ({"type": "object", "not": {"type": "string"}}, "not"),  # valid JSON Schema, no grammar for it
    ({"type": "string", "pattern": "(a|"}, "regex"),
    ({"type": "objectt"}, "not valid under any of the given schemas"),
])
def test_unusable_schemas_are_refused_by_name(server: Server, schema: dict, says: str) -> None:
    response = server.post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["param"] == "response_format.json_schema.schema" or body["param"] == "response_format"
    assert says in body["message"] and body["error"]["message"] == body["message"]


def test_hostile_schemas_get_4xx_and_the_server_keeps_serving(server: Server) -> None:
    deep: dict[str, Any] = {"type": "integer"}
    for _ in range(10_000):
        deep = {"type": "object", "properties": {"a": deep}}
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100}
                                             for i in range(10_000)}}  # ~1.5 MB
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for schema in (deep, wide):
        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(50_000)  # only to serialise the hostile body here
        try:
            payload = json.dumps({**body, "response_format": {
                "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
        finally:
            sys.setrecursionlimit(limit)
        response = server.post_raw("/v1/chat/completions", payload.encode())
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert "nests too deeply" in message or "bytes of JSON; the limit is" in message
    ok = server.post("/v1/chat/completions", {**body, "max_tokens": 2})
    assert ok.status_code == 200
