"""PuzzleVQA: abstract visual pattern puzzles (20 kinds: colours, sizes, numbers, shapes), four
options shown as letters; per-kind and macro accuracy. Only items whose image is here are used."""

from __future__ import annotations

import json
from pathlib import Path

from magistral.client.images import user_message
from magistral.evals.base import ExactMatch, Item
from magistral.evals.choices import LETTERS, extract_letter, format_options


class PuzzleVQA(ExactMatch):
    name = "puzzlevqa"
    claimed = None  # the release publishes no PuzzleVQA figure

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        root = data_dir / "puzzlevqa"
        kinds: dict[str, list[Item]] = {}
        for path in sorted(root.glob("*.json")):
            for i, line in enumerate(path.read_text().splitlines()):
                row = json.loads(line) if line.strip() else None
                if row is None or not (root / row["image"]).is_file():
                    continue
                options = [str(o) for o in row["options"]]  # answers and options differ in type in 6 kinds
                gold = LETTERS[options.index(str(row["answer"]))]
                prompt = (f"{row['question']}\n{format_options(options)}\n"
                          "Answer with the option's letter from the given choices directly.")
                kinds.setdefault(path.stem, []).append(Item(
                    id=f"{path.stem}/{i}", group=path.stem, gold=gold,
                    messages=[user_message(prompt, root / row["image"])]))
        # interleave the kinds so that a --limit still covers all of them
        items = [kind[i] for i in range(max(map(len, kinds.values()), default=0))
                 for kind in kinds.values() if i < len(kind)]
        return items[:limit] if limit is not None else items

    def extract(self, text: str) -> str | None:
        return extract_letter(text, 4)
