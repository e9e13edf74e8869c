"""Charts: held-out questions about generated bar charts (magistral.train.tasks.charts, drawn
from seeds training never uses), answered after a closed reasoning trace. Exact answers, by
question kind. Needs no data folder."""

from __future__ import annotations

import random
from pathlib import Path

from magistral.client.images import user_message
from magistral.evals.base import ExactMatch, Item
from magistral.train.tasks.charts import KINDS, example

PER_KIND = 50


class Charts(ExactMatch):
    name = "charts"
    claimed = None
    requires_trace = True  # an answer counts only after a closed [THINK] trace (thinking chunks)

    def items(self, data_dir: Path, limit: int | None) -> list[Item]:
        items = []
        for i in range(PER_KIND * len(KINDS)):
            kind = KINDS[i % len(KINDS)]
            ex = example(random.Random(f"charts-eval-{i}"), kind)  # training seeds are "{seed}-{step}-{rank}"
            items.append(Item(id=f"chart-{i}", gold=ex.answer, group=kind,
                              messages=[user_message(ex.question, ex.image)]))
            if limit is not None and len(items) >= limit:
                break
        return items

    def extract(self, text: str) -> str | None:
        answer = text.strip().rstrip(".").strip()
        return answer or None
