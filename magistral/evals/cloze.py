"""Log-likelihood ("cloze") multiple choice through `/v1/completions` with echo + logprobs.

Each option is scored as a continuation of the question: the prompt's own token logprobs come
back with `echo: true, logprobs: 0, max_tokens: 0` (prefill only, nothing generated), and the
option's log-probability is the sum over its tokens. The model picks the option with the highest
score under one of four normalisations (all are reported):

- `char`: divided by the option's character count, its leading space included — lighteval's
  `LogProbCharNorm()`, the `acc_norm` of the tasks SmolLM2's authors evaluate with;
- `char_nospace`: the same without the leading space (`LogProbCharNorm(ignore_first_space=True)`);
- `token`: divided by the option's token count (lighteval's `LogProbTokenNorm()`);
- `sum`: the summed log-probability (lm-evaluation-harness `acc`).

This is the formulation base models are evaluated with; it needs no answer extraction.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from magistral.client import Client
from magistral.evals.base import ResponseCache, Result, Settings, TaskReport, ask_all
from magistral.evals.choices import LETTERS

NORMALISATIONS = ("char", "char_nospace", "token", "sum")
PRIMARY = "char"


@dataclass
class ClozeItem:
    id: str
    group: str
    context: str
    options: list[str]  # continuations, each starting with a space
    gold: int


def option_scores(client: Client, model: str, item: ClozeItem) -> list[dict[str, float]]:
    """For each option: its summed logprob, token count and character count (one request: the
    options share their context and are prefilled together)."""
    response = client.completions.create(model=model, prompt=[item.context + o for o in item.options],
                                         max_tokens=0, echo=True, logprobs=0, temperature=0)
    scores = []
    for choice in sorted(response["choices"], key=lambda c: c["index"]):
        block = choice["logprobs"]
        start = len(item.context)
        picked = [lp for lp, offset in zip(block["token_logprobs"], block["text_offset"], strict=True)
                  if offset >= start]
        if not picked or any(lp is None for lp in picked):
            raise ValueError(f"{item.id}: the option's tokens are not separable from the context")
        option = choice["text"][start:]
        scores.append({"logprob": sum(picked), "tokens": len(picked), "chars": len(option.lstrip(" "))})
    return scores


def pick(scores: list[dict[str, float]], options: list[str], normalisation: str) -> int:
    """The index of the option with the best score under `normalisation`."""
    def value(i: int) -> float:
        logprob = scores[i]["logprob"]
        if normalisation == "char":
            return logprob / max(1, len(options[i]))
        if normalisation == "char_nospace":
            return logprob / max(1, len(options[i].lstrip(" ")))
        if normalisation == "token":
            return logprob / max(1, scores[i]["tokens"])
        return logprob
    return max(range(len(scores)), key=value)


def mmlu_cloze_items(data_dir: Path, limit: int | None) -> list[ClozeItem]:
    """MMLU's test split as SmolLM2's evaluation words it (lighteval's CF formulation):
    "Question: {question}\\nAnswer:" followed by " {option}"."""
    root = data_dir / "mmlu" / "test"
    subjects = sorted(p.name.removesuffix("_test.csv") for p in root.glob("*_test.csv"))
    per_subject = None if limit is None else max(1, limit // len(subjects))
    items = []
    for subject in subjects:
        with (root / f"{subject}_test.csv").open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if len(row) == 6][:per_subject]
        for i, row in enumerate(rows):
            items.append(ClozeItem(id=f"{subject}/{i}", group=subject,
                                   context=f"Question: {row[0].strip()}\nAnswer:",
                                   options=[" " + o.strip() for o in row[1:5]],
                                   gold=LETTERS.index(row[5].strip())))
    return items[:limit] if limit is not None else items


CLOZE_TASKS: dict[str, tuple[Callable[[Path, int | None], list[ClozeItem]], float | None]] = {
    # task → (items, the published score of the default model in this formulation)
    "mmlu_cloze": (mmlu_cloze_items, 29.3),  # SmolLM2-135M-Instruct's model card, MMLU (cloze)
}


def run_cloze(name: str, client: Client, settings: Settings, data_dir: Path, run_dir: Path,
              progress: Callable[[int, int], None] | None = None) -> TaskReport:
    """Score every item (resumable: responses are cached in the run folder) and report the
    accuracy under the primary normalisation, with the others in the settings."""
    make_items, _ = CLOZE_TASKS[name]
    items = make_items(data_dir, settings.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(run_dir / f"{name}.responses.jsonl")
    ask_all(items, cache, lambda item: {"scores": option_scores(client, settings.model, item)},
            settings.concurrency, progress)
    by_normalisation: dict[str, list[Result]] = {n: [] for n in NORMALISATIONS}
    for item in items:
        row = cache.done[item.id]
        for normalisation in NORMALISATIONS:
            chosen = None if row.get("error") else pick(row["scores"], item.options, normalisation)
            by_normalisation[normalisation].append(Result(
                id=item.id, group=item.group, gold=LETTERS[item.gold],
                answer=None if chosen is None else LETTERS[chosen], correct=chosen == item.gold,
                text=json.dumps(row.get("scores")), error=row.get("error")))
    report = TaskReport(task=name, settings={**asdict(settings), "formulation": _formulation()},
                        results=by_normalisation[PRIMARY])
    for normalisation in NORMALISATIONS:
        results = by_normalisation[normalisation]
        report.settings[f"accuracy_{normalisation}"] = sum(r.correct for r in results) / max(1, len(results))
    return report


def _formulation() -> str:
    return ("cloze, 0-shot: 'Question: <question>\\nAnswer:' + ' <option>', options scored by their "
            "log-probability through /v1/completions (echo + logprobs); the accuracy is under "
            f"normalisation '{PRIMARY}' (per character, leading space included: lighteval's "
            "LogProbCharNorm, the acc_norm of SmolLM2's evaluation), the others are in "
            "accuracy_char_nospace / accuracy_token / accuracy_sum")
