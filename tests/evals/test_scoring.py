"""Scoring against local endpoints whose answers we control (loopback only)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from magistral.client import Client
from magistral.evals.base import Settings, run_task
from magistral.evals.gsm8k import GSM8K
from magistral.evals.humaneval import HumanEval, load_problems
from magistral.evals.mmlu import MMLU
from magistral.evals.puzzlevqa import PuzzleVQA
from magistral.evals.report import write_reports
from magistral.evals.scienceqa import ScienceQA
from tests.loopback import LoopbackEndpoint, completion

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "mmlu").is_dir(), reason="../shared/data is not here")


def key(content: str | list) -> str:
    """What the fake endpoint looks answers up by: the text, or text and images together
    (some ScienceQA questions share their text and differ by the picture)."""
    return content if isinstance(content, str) else hashlib.sha1(json.dumps(content).encode()).hexdigest()


def thinking_and_text(thinking: str, text: str) -> str | list:
    if not thinking:
        return text
    return [{"type": "thinking", "thinking": [{"type": "text", "text": thinking}]},
            {"type": "text", "text": text}]


class FakeEndpoint(LoopbackEndpoint):
    """A chat-completions server on 127.0.0.1 that answers with answer(prompt) → (thinking, text)."""

    def __init__(self, answer: Callable[[str], tuple[str, str]]):
        super().__init__(lambda body: (200, {}, completion(body["model"], thinking_and_text(
            *answer(key(body["messages"][-1]["content"]))))))


@pytest.fixture
def endpoint() -> Iterator[Callable[[Callable[[str], tuple[str, str]]], FakeEndpoint]]:
    servers: list[FakeEndpoint] = []

    def make(answer: Callable[[str], tuple[str, str]]) -> FakeEndpoint:
        servers.append(FakeEndpoint(answer))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def run(task, server: FakeEndpoint, tmp_path: Path, limit: int):
    with Client(server.url, "test-key") as client:
        return run_task(task, client, Settings(model="m", limit=limit, concurrency=8), DATA, tmp_path)


def test_gold_answers_score_100_percent_through_thinking_and_chatter(endpoint, tmp_path: Path) -> None:
    mmlu_gold = {item.messages[-1]["content"]: item.gold for item in MMLU().items(DATA, 114)}
    gsm_gold = {item.messages[-1]["content"]: item.gold for item in GSM8K().items(DATA, 40)}

    def answer(prompt: str) -> tuple[str, str]:
        if prompt in mmlu_gold:
            return "Options B and C look wrong... maybe A? No.", f"The answer is ({mmlu_gold[prompt]})."
        return "12 + 30 = 42, then 7 more", f"So she has that many.\n#### {gsm_gold[prompt]}"

    server = endpoint(answer)
    mmlu = run(MMLU(), server, tmp_path, 114)
    assert len(mmlu.results) == 114 and len(mmlu.by_group()) == 57
    assert mmlu.accuracy == 1.0 and mmlu.macro_accuracy() == 1.0
    gsm = run(GSM8K(), server, tmp_path, 40)
    assert gsm.accuracy == 1.0
    write_reports([mmlu, gsm], tmp_path, "m")
    report = json.loads((tmp_path / "report.json").read_text())
    assert [t["accuracy"] for t in report["tasks"]] == [1.0, 1.0]
    assert "| mmlu | 100.0 | 84.5 | 114 |" in (tmp_path / "report.md").read_text()


def test_gold_answers_score_100_percent_on_image_and_code_tasks(endpoint, tmp_path: Path) -> None:
    gold = {key(item.messages[-1]["content"]): f"The answer is {item.gold}."
            for task in (ScienceQA(), PuzzleVQA()) for item in task.items(DATA, None)}
    solutions = {p["prompt"]: p["canonical_solution"] for p in load_problems()}
    for item in HumanEval().items(DATA, 20):
        code = item.meta["prompt"] + solutions[item.meta["prompt"]]
        gold[key(item.messages[-1]["content"])] = f"```python\n{code}```"
    server = endpoint(lambda prompt: ("Let me look at the picture.", gold[prompt]))
    for task, limit, expected in ((ScienceQA(), None, 300), (PuzzleVQA(), None, 200), (HumanEval(), 20, 20)):
        report = run(task, server, tmp_path, limit)
        assert len(report.results) == expected and report.accuracy == 1.0, task.name
    assert len(run(PuzzleVQA(), server, tmp_path, None).by_group()) == 20


@pytest.mark.parametrize("task", [MMLU(), ScienceQA(), PuzzleVQA()], ids=lambda t: t.name)
def test_always_a_scores_the_share_of_a(task, endpoint, tmp_path: Path) -> None:
    items = task.items(DATA, 300)
    share = sum(item.gold == "A" for item in items) / len(items)
    report = run(task, endpoint(lambda prompt: ("", "A")), tmp_path, 300)
    assert report.accuracy == pytest.approx(share) and 0 < share < 1


def test_a_rerun_resumes_from_the_cache(endpoint, tmp_path: Path) -> None:
    server = endpoint(lambda prompt: ("", "#### 3"))
    first = run(GSM8K(), server, tmp_path, 10)
    assert server.requests == 10
    second = run(GSM8K(), server, tmp_path, 15)  # only the 5 new items are asked
    assert server.requests == 15 and len(second.results) == 15
    assert [r.answer for r in first.results] == ["3"] * 10


def test_answer_extraction() -> None:
    mmlu, gsm = MMLU(), GSM8K()
    assert mmlu.extract("Let me think. **Answer: C**") == "C"
    assert mmlu.extract("B) because the field has degree 4") == "B"
    assert mmlu.extract("I am not sure.") is None
    assert gsm.extract("5 + 3 = 8 apples, so the answer is $1,250.00") == "1250"
    assert gsm.extract("x = \\boxed{-7}") == "-7"
    assert gsm.extract("no numbers") is None


def test_response_cache_asks_failed_requests_again(tmp_path) -> None:
    from magistral.evals.base import ResponseCache

    cache = ResponseCache(tmp_path / "r.jsonl")
    cache.add({"id": "a", "text": "A"})
    cache.add({"id": "b", "text": "", "error": "APIConnectionError: refused"})
    assert set(cache.done) == {"a", "b"}  # this run scores both
    assert set(ResponseCache(tmp_path / "r.jsonl").done) == {"a"}  # the next run asks b again
