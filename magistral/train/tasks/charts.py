"""Bar charts drawn with Pillow, and questions about them with a reasoning trace.

A chart has 3–6 vertical bars, each labelled below with one capital letter and an integer value
0–9 against a value axis. Rendering is randomised widely (size and aspect, colours, bar widths
and gaps, margins, Debian's DejaVu and Liberation fonts and sizes, gridlines and tick labels on
or off, light and dark backgrounds, JPEG compression) because the charts a model is judged on
come from other programs. The trace reads every bar left to right, then does one step:

    question  "What is the sum of bars A and D?"
    trace     "A=3 B=7 C=2 D=5. A+D=3+5=8"
    answer    "8"
"""

from __future__ import annotations

import glob
import io
import random
import string
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

KINDS = ("value", "tallest", "shortest", "sum", "difference", "count")
MAX_VALUE = 9


@dataclass(frozen=True)
class Chart:
    labels: tuple[str, ...]
    values: tuple[int, ...]


@dataclass
class Example:
    image: Image.Image
    chart: Chart
    kind: str
    question: str
    trace: str
    answer: str


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """Sans, serif and mono TrueType fonts that Debian installs (fonts-dejavu, fonts-liberation)."""
    found = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf")
                   + glob.glob("/usr/share/fonts/truetype/liberation/Liberation*.ttf"))
    return tuple(f for f in found if "MathTeX" not in f and "ExtraLight" not in f)


@lru_cache(maxsize=512)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def random_chart(rng: random.Random, *, unique_extremes: bool = False) -> Chart:
    """Labels are A, B, C… in order most of the time (as charts usually are), else distinct
    letters in alphabetical order, so that a model must read them, not count."""
    n = rng.randint(3, 6)
    if rng.random() < 0.75:
        labels = tuple(string.ascii_uppercase[:n])
    else:
        labels = tuple(sorted(rng.sample(string.ascii_uppercase, n)))
    while True:
        values = tuple(rng.randint(0, MAX_VALUE) for _ in range(n))
        if not unique_extremes or (values.count(max(values)) == 1 and values.count(min(values)) == 1):
            return Chart(labels, values)


def _colour(rng: random.Random, dark: bool, contrast_with: tuple[int, int, int]) -> tuple[int, int, int]:
    """A colour far enough from the background to be seen."""
    while True:
        c = tuple(rng.randint(0, 255) for _ in range(3))
        if sum(abs(a - b) for a, b in zip(c, contrast_with, strict=True)) > 200:
            return c  # type: ignore[return-value]


def render(chart: Chart, rng: random.Random) -> Image.Image:
    width = rng.randint(128, 512)
    height = max(128, min(512, round(width * rng.uniform(0.5, 1.6))))
    dark = rng.random() < 0.3
    background = tuple(rng.randint(0, 50) if dark else rng.randint(215, 255) for _ in range(3))
    ink = _colour(rng, dark, background)  # axes, ticks and labels
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    fonts = font_files()
    font_path = rng.choice(fonts) if fonts else None
    size = max(8, min(40, round(min(width, height) * rng.uniform(0.05, 0.11))))
    font = _font(font_path, size)
    tick_labels = rng.random() < 0.8
    label_w = draw.textbbox((0, 0), "9", font=font)[2] + 6 if tick_labels else 0
    left = rng.randint(4, 16) + label_w
    right = width - rng.randint(4, 20)
    top = rng.randint(size // 2 + 4, size + 16)
    bottom = height - rng.randint(size + 6, size * 2 + 10)
    if bottom - top < 40 or right - left < 40:
        return render(chart, rng)  # a size too small for this font: draw another
    axis_max = MAX_VALUE + rng.choice([0, 1])
    scale = (bottom - top) / axis_max

    def y_of(value: float) -> float:
        return bottom - value * scale

    if rng.random() < 0.5 or not tick_labels:  # gridlines (without tick labels: count them)
        grid = tuple((a + b) // 2 for a, b in zip(ink, background, strict=True))
        for v in range(1, axis_max + 1):
            draw.line([(left, y_of(v)), (right, y_of(v))], fill=grid, width=1)
    # tick labels every 1, 2, 3 or 5 units, never overlapping
    step = next((s for s in (1, 2, 3, 5) if s * scale >= size * 1.15), 5) if tick_labels else 1
    step = max(step, rng.choice([1, 1, 2, 3])) if tick_labels else 1
    for v in range(0, axis_max + 1, step):
        draw.line([(left - 4, y_of(v)), (left, y_of(v))], fill=ink, width=1)
        if tick_labels:
            draw.text((left - 6, y_of(v)), str(v), fill=ink, font=font, anchor="rm")
    draw.line([(left, top - 2), (left, bottom)], fill=ink, width=rng.choice([1, 1, 2]))
    draw.line([(left, bottom), (right, bottom)], fill=ink, width=rng.choice([1, 1, 2]))

    n = len(chart.values)
    slot = (right - left) / n
    bar_w = slot * rng.uniform(0.35, 0.85)
    one_colour = rng.random() < 0.6
    colour = _colour(rng, dark, background)
    for i, (label, value) in enumerate(zip(chart.labels, chart.values, strict=True)):
        centre = left + slot * (i + 0.5)
        fill = colour if one_colour else _colour(rng, dark, background)
        if value > 0:
            draw.rectangle([centre - bar_w / 2, y_of(value), centre + bar_w / 2, bottom - 1], fill=fill,
                           outline=ink if rng.random() < 0.3 else None)
        draw.text((centre, bottom + 3), label, fill=ink, font=font, anchor="mt")
    if rng.random() < 0.5:  # JPEG artefacts
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(40, 95))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def reading(chart: Chart) -> str:
    return " ".join(f"{label}={value}" for label, value in zip(chart.labels, chart.values, strict=True))


def question_for(chart: Chart, kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(question, trace, answer) of one kind about a chart."""
    read = reading(chart)
    pairs = list(zip(chart.labels, chart.values, strict=True))
    if kind == "value":
        label, value = rng.choice(pairs)
        return f"What is the value of bar {label}?", f"{read}. {label}={value}", str(value)
    if kind in ("tallest", "shortest"):
        pick = max if kind == "tallest" else min
        label, value = pick(pairs, key=lambda p: p[1])
        word = "max" if kind == "tallest" else "min"
        return f"Which bar is the {kind}?", f"{read}. {word} {label}={value}", label
    if kind == "sum":
        (a, va), (b, vb) = sorted(rng.sample(pairs, 2))
        return f"What is the sum of bars {a} and {b}?", f"{read}. {a}+{b}={va}+{vb}={va + vb}", str(va + vb)
    if kind == "difference":
        high, low = max(chart.values), min(chart.values)
        return ("What is the difference between the tallest and the shortest bar?",
                f"{read}. {high}-{low}={high - low}", str(high - low))
    if kind == "count":
        return "How many bars are there?", f"{read}. {len(pairs)} bars", str(len(pairs))
    raise ValueError(f"unknown question kind {kind!r}")


def example(rng: random.Random, kind: str | None = None) -> Example:
    kind = kind or rng.choice(KINDS)
    chart = random_chart(rng, unique_extremes=kind in ("tallest", "shortest"))
    question, trace, answer = question_for(chart, kind, rng)
    return Example(render(chart, rng), chart, kind, question, trace, answer)
