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

    def extract(self, text: str) -> str | None: ...


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


def message_text(message: dict[str, Any]) -> tuple[str, str]:
    """(answer text, thinking text) of a response message in either content shape."""
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return content or "", message.get("reasoning_content") or ""
    text, thinking = [], []
    for chunk in content:
        if chunk.get("type") == "text":
            text.append(chunk["text"])
        elif chunk.get("type") == "thinking":
            thinking.extend(t.get("text", "") for t in chunk.get("thinking", []))
    return "".join(text), "".join(thinking)


class ResponseCache:
    """Every response appended to a JSONL file as it arrives; a rerun skips what is there."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.done: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done[row["id"]] = row

    def add(self, row: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            self.done[row["id"]] = row


def run_task(task: Task, client: Client, settings: Settings, data_dir: Path, run_dir: Path,
             progress: Callable[[int, int], None] | None = None) -> TaskReport:
    items = task.items(data_dir, settings.limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(run_dir / f"{task.name}.responses.jsonl")
    todo = [item for item in items if item.id not in cache.done]
    finished = [len(items) - len(todo)]

    def ask(item: Item) -> None:
        try:
            response = client.complete(item.messages, settings.model, **settings.request())
            text, thinking = message_text(response["choices"][0]["message"])
            cache.add({"id": item.id, "text": text, "thinking": thinking, "usage": response.get("usage")})
        except Exception as exc:  # recorded, scored wrong, retried on the next run
            cache.add({"id": item.id, "text": "", "thinking": "", "error": f"{type(exc).__name__}: {exc}"})
        with cache._lock:
            finished[0] += 1
            if progress:
                progress(finished[0], len(items))

    with ThreadPoolExecutor(max(1, settings.concurrency)) as pool:
        list(pool.map(ask, todo))
    report = TaskReport(task=task.name, settings=asdict(settings))
    for item in items:
        row = cache.done[item.id]
        answer = task.extract(row["text"]) if not row.get("error") else None
        report.results.append(Result(id=item.id, group=item.group, gold=item.gold, answer=answer,
                                     correct=answer is not None and answer == item.gold, text=row["text"],
                                     thinking=row.get("thinking", ""), error=row.get("error")))
    return report
