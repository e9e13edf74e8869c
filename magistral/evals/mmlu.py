"""MMLU: 57 subjects of four-way multiple choice, 0- or 5-shot (dev exemplars), letter extraction
that tolerates thinking traces and chatter; per-subject and macro accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

from magistral.evals.base import ExactMatch, Item
from magistral.evals.choices import extract_letter, format_options


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if len(row) == 6]


def _format(row: list[str], with_answer: bool) -> str:
    text = row[0].strip() + "\n" + format_options(row[1:5])
    return text + (f"\nAnswer: {row[5]}" if with_answer else "\nAnswer:")


class MMLU(ExactMatch):
    name = "mmlu"
    claimed = 84.5

    def __init__(self, shots: int = 0):
        self.shots = shots

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        root = data_dir / "mmlu"
        subjects = sorted(p.name.removesuffix("_test.csv") for p in (root / "test").glob("*_test.csv"))
        per_subject = None if limit is None else max(1, limit // len(subjects))
        items = []
        for subject in subjects:
            rows = _rows(root / "test" / f"{subject}_test.csv")[:per_subject]
            shots = _rows(root / "dev" / f"{subject}_dev.csv")[:self.shots]
            title = subject.replace("_", " ")
            header = (f"The following are multiple choice questions about {title}. Answer with the "
                      "letter of the correct option.\n\n")
            examples = "".join(_format(r, True) + "\n\n" for r in shots)
            for i, row in enumerate(rows):
                prompt = header + examples + _format(row, False)
                items.append(Item(id=f"{subject}/{i}", group=subject, gold=row[5].strip(),
                                  messages=[{"role": "user", "content": prompt}]))
        return items[:limit] if limit is not None else items

    def extract(self, text: str) -> str | None:
        return extract_letter(text, 4)
