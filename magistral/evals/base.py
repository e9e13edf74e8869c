"""What every task shares: items, a resumable concurrent runner, and scoring."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from magistral.client import Client


@dataclass
class Item:
    id: str
    messages: list[dict[str, Any]]
    gold: str
    group: str = ""  # e.g. the MMLU subject
    meta: dict[str, Any] = field(default_factory=dict)  # what a task's scorer needs (tests, …)


@dataclass
class Settings:
    model: str
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0
    concurrency: int = 4
    limit: int | None = None

    def request(self) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            params["random_seed"] = self.seed
        return params


class Task(Protocol):
    name: str
    claimed: float | None  # the release's published score, for the report

    def items(self, data_dir: Path, limit: int | None) -> list[Item]: ...

    def score(self, item: Item, text: str) -> tuple[str | None, bool]:
        """(the answer read from the response, whether it is right)."""
        ...


class ExactMatch:
    """Tasks whose answer is extracted from the text and compared with the gold string."""

    def extract(self, text: str) -> str | None:
        raise NotImplementedError

    def score(self, item: Item, text: str) -> tuple[str | None, bool]:
        answer = self.extract(text)
        return answer, answer is not None and answer == item.gold


@dataclass
class Result:
    id: str
    group: str
    gold: str
    answer: str | None
    correct: bool
    text: str
    thinking: str = ""
    error: str | None = None


@dataclass
class TaskReport:
    task: str
    settings: dict[str, Any]
    results: list[Result] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.results) / len(self.results) if self.results else 0.0

    def by_group(self) -> dict[str, float]:
        groups: dict[str, list[bool]] = {}
        for r in self.results:
            groups.setdefault(r.group, []).append(r.correct)
        return {g: sum(v) / len(v) for g, v in sorted(groups.items())}

    def macro_accuracy(self) -> float:
        groups = self.by_group()
        return sum(groups.values()) / len(groups) if groups else 0.0


class ResponseCache:
    """Every response appended to a JSONL file as it arrives; a rerun skips what is there,
    except failed requests, which it asks again."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.done: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if not row.get("error"):
                        self.done[row["id"]] = row

    def add(self, row: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            self.done[row["id"]] = row


def ask_all(items: list[Any], cache: ResponseCache, answer: Callable[[Any], dict[str, Any]],
            concurrency: int, progress: Callable[[int, int], None] | None = None) -> None:
    """Ask every item the cache lacks, `concurrency` at a time; each answer (a dict) is cached as
    it arrives. A failed request is cached as an error row: scored wrong, asked again next run."""
    todo = [item for item in items if item.id not in cache.done]
    finished = [len(items) - len(todo)]

    def ask(item: Any) -> None:
        try:
            row = {"id": item.id, **answer(item)}
        except Exception as exc:
            row = {"id": item.id, "error": f"{type(exc).__name__}: {exc}"}
        cache.add(row)
        with cache._lock:
            finished[0] += 1
            if progress:
                progress(finished[0], len(items))

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(ask, todo))


def run_task(task: Task, client: Client, settings: Settings, data_dir: Path, run_dir: Path,
             progress: Callable[[int, int], None] | None = None) -> TaskReport:
    items = task.items(data_dir, settings.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(run_dir / f"{task.name}.responses.jsonl")

    def answer(item: Item) -> dict[str, Any]:
        response = client.chat.complete(model=settings.model, messages=item.messages, **settings.request())
        return {"text": response.text, "thinking": response.thinking, "usage": response.usage}

    def score(item: Item) -> Result:
        row = cache.done[item.id]
        answer, correct = task.score(item, row["text"]) if not row.get("error") else (None, False)
        if getattr(task, "requires_trace", False) and not row.get("thinking"):
            correct = False  # a reasoning task: the answer must follow a closed trace
        return Result(id=item.id, group=item.group, gold=item.gold, answer=answer, correct=correct,
                      text=row.get("text", ""), thinking=row.get("thinking", ""), error=row.get("error"))

    ask_all(items, cache, answer, settings.concurrency, progress)
    with ThreadPoolExecutor(max(1, settings.concurrency)) as pool:
        results = list(pool.map(score, items))  # HumanEval runs code here, so in parallel too
    return TaskReport(task=task.name, settings=asdict(settings), results=results)
