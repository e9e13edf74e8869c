"""GSM8K: grade-school word problems; the last number of the answer, exact match."""

from __future__ import annotations

import json
import re
from pathlib import Path

from magistral.evals.base import ExactMatch, Item

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")
_FINAL = re.compile(r"(?:####|answer is|answer:)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def normalize(number: str) -> str:
    value = number.replace(",", "").rstrip(".")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


class GSM8K(ExactMatch):
    name = "gsm8k"
    claimed = None  # the release publishes no GSM8K figure

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()
        items = []
        for i, line in enumerate(lines[:limit] if limit is not None else lines):
            row = json.loads(line)
            gold = normalize(row["answer"].rsplit("####", 1)[1].strip())
            prompt = (f"{row['question']}\n\nSolve the problem step by step, then give the final answer "
                      "on its own line as '#### <number>'.")
            items.append(Item(id=str(i), gold=gold, messages=[{"role": "user", "content": prompt}]))
        return items

    def extract(self, text: str) -> str | None:
        for pattern in (_FINAL, _BOXED):
            found = pattern.findall(text)
            if found:
                numbers = _NUMBER.findall(found[-1])
                if numbers:
                    return normalize(numbers[-1])
        numbers = _NUMBER.findall(text)
        return normalize(numbers[-1]) if numbers else None
