"""The chart task generator: answers follow from the chart, traces read every bar, rendering
varies widely and stays inside the issue's bounds."""

from __future__ import annotations

import random
import re

import pytest

from magistral.train.tasks.charts import KINDS, example, font_files, question_for, random_chart


@pytest.mark.parametrize("kind", KINDS)
def test_answers_follow_from_the_chart(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(50):
        chart = random_chart(rng, unique_extremes=kind in ("tallest", "shortest"))
        question, trace, answer = question_for(chart, kind, rng)
        values = dict(zip(chart.labels, chart.values, strict=True))
        read = dict(re.findall(r"([A-Z])=(\d)\b", trace.split(". ")[0]))
        assert {k: int(v) for k, v in read.items()} == values  # the trace reads every bar in order
        if kind == "value":
            assert answer == str(values[question[-2]])
        elif kind == "tallest":
            assert values[answer] == max(chart.values) and chart.values.count(max(chart.values)) == 1
        elif kind == "shortest":
            assert values[answer] == min(chart.values) and chart.values.count(min(chart.values)) == 1
        elif kind == "sum":
            a, b = re.findall(r"bars ([A-Z]) and ([A-Z])", question)[0]
            assert answer == str(values[a] + values[b])
        elif kind == "difference":
            assert answer == str(max(chart.values) - min(chart.values))
        else:
            assert answer == str(len(chart.values)) and 3 <= len(chart.values) <= 6


def test_rendering_varies_within_bounds() -> None:
    rng = random.Random(0)
    examples = [example(rng) for _ in range(60)]
    sizes = {e.image.size for e in examples}
    assert all(128 <= w <= 512 and 128 <= h <= 512 for w, h in sizes) and len(sizes) > 50
    assert any(w != h for w, h in sizes)
    backgrounds = [e.image.getpixel((1, 1)) for e in examples]
    assert any(sum(b) < 160 for b in backgrounds) and any(sum(b) > 600 for b in backgrounds)  # dark and light
    assert {e.kind for e in examples} == set(KINDS)
    assert len(font_files()) >= 10  # Debian's DejaVu and Liberation families
    assert any(e.chart.labels[0] != "A" for e in examples)  # letters must be read, not counted
