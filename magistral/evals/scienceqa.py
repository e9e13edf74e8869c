"""ScienceQA (image questions): the test items that have an image, multiple choice (2–5
options), answered with a letter. Data: LLaVA's evaluation file + the original test images."""

from __future__ import annotations

import json
from pathlib import Path

from magistral.client.images import user_message
from magistral.evals.base import ExactMatch, Item
from magistral.evals.choices import LETTERS, extract_letter

INSTRUCTION = "Answer with the option's letter from the given choices directly."


class ScienceQA(ExactMatch):
    name = "scienceqa"
    claimed = 79.4

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        root = data_dir / "scienceqa"
        entries = json.loads((root / "llava_test_CQM-A.json").read_text())
        items = []
        for entry in entries:
            image = root / "images" / "test" / entry.get("image", "")
            if "image" not in entry or not image.is_file():  # only the image questions that are here
                continue
            prompt = entry["conversations"][0]["value"].removeprefix("<image>\n")
            options = sum(1 for line in prompt.splitlines() if line[:2] in {f"{x}." for x in LETTERS})
            items.append(Item(id=entry["id"], gold=entry["conversations"][1]["value"].strip(),
                              messages=[user_message(f"{prompt}\n{INSTRUCTION}", image)],
                              meta={"options": options}))
            if limit is not None and len(items) >= limit:
                break
        return items

    def score(self, item: Item, text: str) -> tuple[str | None, bool]:
        answer = extract_letter(text, item.meta["options"])
        return answer, answer == item.gold
