"""`magistral eval bfcl`: the tool conversion (against BFCL's own code), scoring by BFCL's own
AST checker, the runner against an endpoint whose calls we control, and a real run."""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from magistral.client import Client
from magistral.evals.base import Item, Settings
from magistral.evals.bfcl import (
    BFCL,
    CATEGORIES,
    NO_CALL,
    checker,
    package_dir,
    run_bfcl,
    to_tools,
    tool_name,
)
from magistral.evals.report import write_reports
from tests.conftest import MAGISTRAL, Server
from tests.loopback import LoopbackEndpoint, completion

pytest.importorskip("bfcl_eval", reason="bfcl-eval is installed by setup.sh (pip install --no-deps)")


def bfcl_functions(path: str, *names: str) -> dict[str, Any]:
    """Functions of a bfcl_eval source file, run from their source: the modules themselves import
    tree-sitter and write folders on import, which we avoid."""
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI

    tree = ast.parse((package_dir() / path).read_text())
    module = ast.Module(body=[node for node in tree.body
                              if isinstance(node, ast.FunctionDef) and node.name in names], type_ignores=[])
    namespace: dict[str, Any] = {"copy": copy, "re": re, "json": json, "ModelStyle": ModelStyle,
                                 "GORILLA_TO_OPENAPI": GORILLA_TO_OPENAPI}
    exec(compile(module, path, "exec"), namespace)
    assert all(name in namespace for name in names)
    return namespace


def test_tools_are_what_bfcls_openai_handler_sends_for_every_item() -> None:
    hint = bfcl_functions("utils.py", "is_java", "is_js", "_get_language_specific_hint",
                          "_func_doc_language_specific_pre_processing")
    handler = bfcl_functions("model_handler/utils.py", "_cast_to_openai_type", "convert_to_tool")
    items = BFCL().items(Path("."), None)
    assert {c: sum(i.group == c for i in items) for c in CATEGORIES} == {
        "simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240}
    originals = {}
    for stem in CATEGORIES.values():
        for line in (package_dir() / "data" / f"BFCL_v4_{stem}.json").read_text().splitlines():
            originals[json.loads(line)["id"]] = json.loads(line)["function"]
    for item in items:
        functions = hint["_func_doc_language_specific_pre_processing"](
            copy.deepcopy(originals[item.id]), CATEGORIES[item.group])
        expected = handler["convert_to_tool"](functions, handler["GORILLA_TO_OPENAPI"],
                                              handler["ModelStyle"].OPENAI_COMPLETIONS)
        assert item.meta["tools"] == expected, item.id
        assert item.meta["functions"] == functions  # what BFCL's checker is given: BFCL's own types


def test_conversion_of_bfcl_types_and_dotted_names() -> None:
    doc = {"name": "geo.distance.find", "description": "Distance.", "parameters": {
        "type": "dict", "required": ["points"], "properties": {
            "points": {"type": "array", "items": {"type": "tuple"}, "description": "Pairs."},
            "scale": {"type": "float", "description": "Scale."},
            "options": {"type": "dict", "description": "More.", "properties": {
                "unit": {"type": "string", "enum": ["km", "mi"], "description": "Unit."},
                "extra": {"type": "any", "description": "Anything."}}},
            "untyped": {"description": "No type."}}}}
    (tool,) = to_tools([doc])
    function = tool["function"]
    assert tool["type"] == "function" and function["name"] == "geo_distance_find" == tool_name(doc["name"])
    assert function["description"] == "Distance. Note that the provided function is in Python 3 syntax."
    parameters = function["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["points"]
    props = parameters["properties"]
    assert props["points"] == {"type": "array", "items": {"type": "array"}, "description": "Pairs."}
    assert props["scale"] == {"type": "number", "format": "float",
                              "description": "Scale. This is a float type value."}
    assert props["options"]["type"] == "object"
    assert props["options"]["properties"]["extra"]["type"] == "string"
    assert props["options"]["properties"]["unit"]["enum"] == ["km", "mi"]
    assert props["untyped"]["type"] == "string"
    assert doc["parameters"]["type"] == "dict"  # the original is left alone (the checker reads it)


def call(name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    return {"id": "abcdefghi", "type": "function", "function": {
        "name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}


def bfcl_item(category: str, index: int) -> Item:
    return next(i for i in BFCL([category]).items(Path("."), index + 1) if i.id.endswith(f"_{index}"))


def test_scoring_uses_bfcls_checker() -> None:
    task = BFCL()
    factorial = bfcl_item("simple", 1)  # math.factorial(number=5)
    assert factorial.meta["possible_answer"] == [{"math.factorial": {"number": [5]}}]
    right = call("math_factorial", {"number": 5})
    answer, correct = task.score(factorial, {"content": "", "tool_calls": [right]})
    assert correct and answer == '[{"math.factorial": {"number": 5}}]'  # named back as BFCL names it
    answer, correct = task.score(factorial, {"tool_calls": [call("math_factorial", {"number": 6})]})
    assert not correct and "value_error" in answer and "number" in answer
    answer, correct = task.score(factorial, {"tool_calls": [call("math_factorial", {"number": "5"})]})
    assert not correct and "type_error" in answer
    assert task.score(factorial, {"content": "5! = 120", "tool_calls": None}) == (NO_CALL, False)
    answer, correct = task.score(factorial, {"tool_calls": [call("math_factorial", "{not json")]})
    assert not correct and answer.startswith("undecodable")
    answer, correct = task.score(factorial, {"tool_calls": [right, right]})
    assert not correct and "wrong_count" in answer

    triangle = bfcl_item("simple", 0)  # an optional parameter may be left out or given its default
    assert task.score(triangle, {"tool_calls": [call("calculate_triangle_area",
                                                     {"base": 10, "height": 5})]})[1]
    assert task.score(triangle, {"tool_calls": [call("calculate_triangle_area",
                                                     {"base": 10, "height": 5, "unit": "units"})]})[1]

    spotify = bfcl_item("parallel", 0)  # two calls, in any order
    first, second = call("spotify_play", {"artist": "Taylor Swift", "duration": 20}), \
        call("spotify_play", {"artist": "Maroon 5", "duration": 15})
    assert task.score(spotify, {"tool_calls": [second, first]})[1]
    assert not task.score(spotify, {"tool_calls": [first]})[1]

    heron = bfcl_item("multiple", 1)  # the right one of several functions
    assert task.score(heron, {"tool_calls": [call("math_triangle_area_heron",
                                                  {"side1": 3, "side2": 4, "side3": 5})]})[1]
    other = next(t["function"]["name"] for t in heron.meta["tools"]
                 if t["function"]["name"] != "math_triangle_area_heron")
    assert not task.score(heron, {"tool_calls": [call(other, {})]})[1]

    irrelevant = bfcl_item("irrelevance", 0)
    assert task.score(irrelevant, {"content": "I cannot compute areas.", "tool_calls": []}) == (NO_CALL, True)
    answer, correct = task.score(irrelevant, {"tool_calls": [call("determine_body_mass_index",
                                                                  {"weight": 10.0, "height": 5.0})]})
    assert not correct and "determine_body_mass_index" in answer
    assert task.score(irrelevant, {"tool_calls": [call("determine_body_mass_index", "[1")]})[1]


def test_checker_is_loaded_without_the_vendor_sdks() -> None:
    module = checker()
    assert module.ast_checker.__module__ == "bfcl_eval.eval_checker.ast_eval.ast_checker"
    assert "bfcl_eval.constants.model_config" not in sys.modules  # the stand-in did not stay
    assert not any(name.split(".")[0] in ("anthropic", "tree_sitter", "cohere") for name in sys.modules)


def gold_calls(possible_answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A call per ground-truth function with each parameter's first accepted value."""
    def pick(options: list[Any]) -> Any:
        chosen = [o for o in options if o != ""]
        return unwrap(chosen[0]) if chosen else None

    def unwrap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: pick(v) for k, v in value.items() if pick(v) is not None}
        if isinstance(value, list):
            return [unwrap(x) if isinstance(x, dict) else x for x in value]
        return value
    return [call(tool_name(name), unwrap(params)) for answer in possible_answer
            for name, params in answer.items()]


def test_runner_asks_with_tools_and_scores_gold_calls_right(tmp_path: Path) -> None:
    items = {(i.messages[-1]["content"], i.meta["tools"][0]["function"]["name"]): i
             for i in BFCL().items(Path("."), 3)}
    seen: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        seen.append(body)
        found = items[(body["messages"][-1]["content"], body["tools"][0]["function"]["name"])]
        answer = completion(body["model"], "None of these functions fits." if found.group == "irrelevance"
                            else "")
        if found.group != "irrelevance":
            answer["choices"][0]["message"]["tool_calls"] = gold_calls(found.meta["possible_answer"])
            answer["choices"][0]["finish_reason"] = "tool_calls"
        return 200, {}, answer

    endpoint = LoopbackEndpoint(respond)
    try:
        with Client(endpoint.url, "test-key") as client:
            settings = Settings(model="m", limit=3, concurrency=4)
            report = run_bfcl(BFCL(), client, settings, Path("."), tmp_path)
    finally:
        endpoint.close()
    assert len(seen) == 15 and all(b["tool_choice"] == "auto" and b["temperature"] == 0 for b in seen)
    assert report.by_group() == {c: 1.0 for c in CATEGORIES} and report.accuracy == 1.0
    assert report.settings["accuracy_macro"] == 1.0 and report.settings["accuracy_parallel"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "bfcl.responses.jsonl").read_text().splitlines()]
    assert sum(bool(r["tool_calls"]) for r in rows) == 12  # every call is kept, as the server sent it
    assert next(r.answer for r in report.results if r.id == "simple_python_1") == \
        '[{"math.factorial": {"number": 5}}]'
    write_reports([report], tmp_path, "m")
    assert "| bfcl | 100.0 | — | 15 |" in (tmp_path / "report.md").read_text()


def test_real_run_on_the_default_model(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [*MAGISTRAL, "eval", "bfcl", "--base-url", server.base_url, "--api-key", server.key, "--limit", "2",
         "--max-tokens", "40", "--concurrency", "10", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=540, check=True)
    assert result.stdout.strip() == str(out)
    (task,) = json.loads((out / "report.json").read_text())["tasks"]
    assert task["task"] == "bfcl" and task["data"].startswith("bfcl-eval ")
    assert set(task["by_group"]) == set(CATEGORIES) and len(task["items"]) == 10
    assert all(0 <= accuracy <= 1 for accuracy in [task["accuracy"], *task["by_group"].values()])
    assert not any(i["error"] for i in task["items"])
    rows = {r["id"]: r for r in map(json.loads, (out / "bfcl.responses.jsonl").read_text().splitlines())}
    for scored in task["items"]:
        calls = rows[scored["id"]]["tool_calls"]  # the model's calls, recorded whether or not it made any
        assert isinstance(calls, list)
        if calls:
            assert json.loads(scored["answer"].split(" -- ")[0])
        else:
            assert scored["answer"] == NO_CALL and scored["correct"] == (scored["group"] == "irrelevance")
    assert "## bfcl by subject" in (out / "report.md").read_text()
