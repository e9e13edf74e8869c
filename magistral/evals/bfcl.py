"""BFCL, the Berkeley Function Calling Leaderboard: its single-turn, non-live categories (simple
Python, multiple, parallel, parallel multiple, irrelevance) on the data the `bfcl-eval` wheel ships,
asked through `tools` (function calling, `tool_choice: "auto"`) and scored by the wheel's own AST
checker against its possible answers. Irrelevance is right when the model makes no call.

bfcl-eval is installed with `--no-deps` (setup.sh): its declared dependencies are every vendor's
SDK. Only three of its modules are imported, all free of them: `constants.enums`,
`constants.type_mappings` and `eval_checker.ast_eval.ast_checker` (see `checker()`). The tool
conversion of its OpenAI handler (`convert_to_tool`, `_cast_to_openai_type` and the language hint
of `_func_doc_language_specific_pre_processing`) lives in modules that import tree-sitter, tenacity
or write folders into site-packages on import, so its few lines are ported here (`to_tools`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
import threading
import types
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from magistral.client import Client
from magistral.evals.base import Item, ResponseCache, Result, Settings, TaskReport, ask_all

# our name → the file stem in bfcl_eval/data (and possible_answer/), also the checker's category
CATEGORIES = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
              "parallel_multiple": "parallel_multiple", "irrelevance": "irrelevance"}
VERSION_PREFIX = "BFCL_v4"
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
NO_CALL = "no call"


def package_dir() -> Path:
    """The installed bfcl_eval package (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("BFCL needs the bfcl-eval package: pip install --no-deps bfcl-eval")
    return Path(next(iter(spec.submodule_search_locations)))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tool_name(name: str) -> str:
    """BFCL's OpenAI handler: '.' is not allowed in a tool name (^[a-zA-Z0-9_-]{1,64}$), so '_'."""
    return re.sub(r"\.", "_", name)


def _cast_to_openai_type(properties: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """bfcl_eval.model_handler.utils._cast_to_openai_type (for GORILLA_TO_OPENAPI), ported."""
    for value in properties.values():
        if "type" not in value:
            value["type"] = "string"
        else:
            var_type = value["type"]
            if var_type == "float":
                value["format"] = "float"
                value["description"] = value.get("description", "") + " This is a float type value."
            value["type"] = mapping.get(var_type, "string")
        if value["type"] in ("array", "object"):
            if "properties" in value:
                value["properties"] = _cast_to_openai_type(value["properties"], mapping)
            elif "items" in value:
                items = value["items"]
                items["type"] = mapping[items["type"]]
                if items["type"] == "array" and "items" in items:
                    items["items"]["type"] = mapping[items["items"]["type"]]
                elif items["type"] == "object" and "properties" in items:
                    items["properties"] = _cast_to_openai_type(items["properties"], mapping)
    return properties


def to_tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BFCL function docs (types such as "dict", "float", "tuple", "any") → OpenAI `tools`, as
    BFCL's OpenAI function-calling handler compiles them for a Python category: the language hint
    appended to each description, '.' in names replaced by '_', the parameters' types mapped to
    JSON Schema's by GORILLA_TO_OPENAPI (float → number with format "float", tuple → array,
    any → string, …)."""
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI

    tools = []
    for function in copy.deepcopy(functions):
        function["description"] = function.get("description", "") + PYTHON_HINT
        function["name"] = tool_name(function["name"])
        function["parameters"]["type"] = "object"
        function["parameters"]["properties"] = _cast_to_openai_type(
            function["parameters"].get("properties", {}), GORILLA_TO_OPENAPI)
        tools.append({"type": "function", "function": function})
    return tools


_checker_lock = threading.Lock()
_checker: types.ModuleType | None = None


def checker() -> types.ModuleType:
    """bfcl_eval.eval_checker.ast_eval.ast_checker, the wheel's own checker. Its one heavy import,
    `constants.model_config.MODEL_CONFIG_MAPPING` (which imports every vendor's handler and SDK),
    serves only `convert_func_name`: whether the model under test had '.' in function names
    replaced by '_'. We map tool names back to BFCL's before checking, so the module is loaded
    with a stand-in for model_config that says no (`underscore_to_dot=False`). The loaded copy is
    private: neither it nor the stand-in stays in sys.modules."""
    global _checker
    with _checker_lock:
        if _checker is not None:
            return _checker
        package_dir()  # a clear error when bfcl-eval is missing
        spec = importlib.util.find_spec("bfcl_eval.eval_checker.ast_eval.ast_checker")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        stand_in = types.ModuleType("bfcl_eval.constants.model_config")
        stand_in.MODEL_CONFIG_MAPPING = defaultdict(  # type: ignore[attr-defined]
            lambda: types.SimpleNamespace(underscore_to_dot=False))
        name = stand_in.__name__
        saved = sys.modules.get(name)
        sys.modules[name] = stand_in
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved
        _checker = module
        return module


def decode_calls(tool_calls: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """The response's calls as BFCL's function-calling handlers decode them, `[{name: {arg: value}}]`
    with BFCL's function names; ValueError when they cannot be (BFCL's "decoder failed")."""
    decoded = []
    for call in tool_calls:
        try:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"undecodable call {json.dumps(call)[:200]}: {exc!r}") from exc
        if not isinstance(arguments, dict):
            raise ValueError(f"arguments are not an object: {json.dumps(arguments)[:200]}")
        decoded.append({names.get(name, name): arguments})
    return decoded


class BFCL:
    name = "bfcl"
    claimed = None  # the release publishes no BFCL figure

    def __init__(self, categories: list[str] | tuple[str, ...] | None = None):
        self.categories = list(categories or CATEGORIES)
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown BFCL categories {unknown}; known: {', '.join(CATEGORIES)}")

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        """The first `limit` items of each category (data_dir is unused: the data is the wheel's)."""
        data = package_dir() / "data"
        items = []
        for category in self.categories:
            stem = f"{VERSION_PREFIX}_{CATEGORIES[category]}.json"
            entries = _jsonl(data / stem)[:limit]
            answers = {} if category == "irrelevance" else \
                {row["id"]: row["ground_truth"] for row in _jsonl(data / "possible_answer" / stem)}
            for entry in entries:
                functions = copy.deepcopy(entry["function"])
                for function in functions:  # what BFCL's loader does to every Python category
                    function["description"] = function.get("description", "") + PYTHON_HINT
                tools = to_tools(entry["function"])
                names = {tool_name(f["name"]): f["name"] for f in entry["function"]}
                answer = answers.get(entry["id"])
                items.append(Item(
                    id=entry["id"], group=category, messages=entry["question"][0],
                    gold=NO_CALL if answer is None else json.dumps(answer),
                    meta={"category": category, "functions": functions, "tools": tools, "names": names,
                          "possible_answer": answer}))
        return items

    def score(self, item: Item, message: dict[str, Any]) -> tuple[str | None, bool]:
        """(the calls as decoded, with the checker's complaint when wrong; whether right) for the
        assistant message of the response (its `tool_calls`)."""
        tool_calls = message.get("tool_calls") or []
        try:
            decoded = decode_calls(tool_calls, item.meta["names"])
        except ValueError as exc:
            decoded, failure = None, str(exc)
        else:
            failure = "" if decoded else NO_CALL
        if item.meta["category"] == "irrelevance":  # right unless a call was decoded
            return (failure or json.dumps(decoded)), not decoded
        if not decoded:
            return failure, False
        from bfcl_eval.constants.enums import Language

        result = checker().ast_checker(item.meta["functions"], decoded, item.meta["possible_answer"],
                                       Language.PYTHON, CATEGORIES[item.meta["category"]], "magistral")
        answer = json.dumps(decoded)
        if not result["valid"]:
            answer += f" -- {result.get('error_type', '')}: {'; '.join(map(str, result.get('error', [])))}"
        return answer, bool(result["valid"])


def run_bfcl(task: BFCL, client: Client, settings: Settings, data_dir: Path, run_dir: Path,
             progress: Callable[[int, int], None] | None = None) -> TaskReport:
    """Ask every item with its tools (resumable: responses are cached in the run folder, calls
    included), score them with BFCL's checker, and report the accuracy per category (`by_group`;
    macro = BFCL's unweighted mean over categories) and over all items."""
    items = task.items(data_dir, settings.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(run_dir / f"{task.name}.responses.jsonl")
    checker()  # loaded once, before the threads

    def answer(item: Item) -> dict[str, Any]:
        response = client.chat.complete(model=settings.model, messages=item.messages,
                                        tools=item.meta["tools"], tool_choice="auto", **settings.request())
        return {"text": response.text, "thinking": response.thinking,
                "tool_calls": response.message.get("tool_calls") or [],
                "finish_reason": response.finish_reason, "usage": response.usage}

    ask_all(items, cache, answer, settings.concurrency, progress)
    results = []
    for item in items:
        row = cache.done[item.id]
        if row.get("error"):
            found, correct = None, False
        else:
            message = {"content": row.get("text"), "tool_calls": row.get("tool_calls")}
            found, correct = task.score(item, message)
        results.append(Result(id=item.id, group=item.group, gold=item.gold, answer=found, correct=correct,
                              text=row.get("text", ""), thinking=row.get("thinking", ""),
                              error=row.get("error")))
    report = TaskReport(task=task.name, settings={**asdict(settings), "categories": task.categories,
                                                  "formulation": _formulation()}, results=results)
    report.settings["accuracy_macro"] = report.macro_accuracy()
    for category, accuracy in report.by_group().items():
        report.settings[f"accuracy_{category}"] = accuracy
    return report


def _formulation() -> str:
    return ("function calling through `tools` (BFCL's OpenAI handler's conversion, tool_choice auto), "
            "0-shot, scored by bfcl-eval's AST checker (irrelevance: right when no call is made); "
            "the accuracy is over all items, per category")
