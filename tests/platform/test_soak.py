"""Load and chaos on one server: many concurrent streams of mixed lengths end without errors
and are each billed exactly once, memory stays flat; a SIGKILL mid-stream leaves every token a
client saw billed, on SQLite and on PostgreSQL. (`python bench/soak.py` runs the long version;
tests/platform/test_chaos.py restarts PostgreSQL and Redis under load.)"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from magistral.platform.store import Store, UsageRecord
from tests.conftest import Server, new_account, new_key, start_server, stop_server
from tests.platform.services import PrivatePostgres

MODEL = "smollm2-135m-instruct"
TOPICS = ["the sea", "a city at night", "bread", "mountains", "a old clock", "rain", "trains", "music"]


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    billed: dict[str, tuple[int, int]] = field(default_factory=dict)  # id → (prompt, completion) sent
    rss_mb: list[float] = field(default_factory=list)  # sampled between rounds
    prefix_cache_mb: list[float] = field(default_factory=list)  # the engine's bounded cache, then

    @property
    def rss_without_cache_mb(self) -> list[float]:
        return [r - c for r, c in zip(self.rss_mb, self.prefix_cache_mb, strict=True)]


def _stream(server: Server, key: str, i: int, result: LoadResult, lock: threading.Lock) -> None:
    body = {"model": MODEL, "stream": True, "max_tokens": 4 + (i * 37) % 32, "temperature": 0.7,
            "messages": [{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]}. ({i})"}]}
    try:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=600,
                          headers=server.auth(key)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
            last, done = None, False
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    last = json.loads(line[6:])
            finish = last["choices"][0]["finish_reason"] if last else None
            if not done or finish not in ("stop", "length"):
                raise RuntimeError(f"stream ended badly: done={done} finish={finish}")
            with lock:
                usage = last["usage"]
                result.billed[last["id"]] = (usage["prompt_tokens"], usage["completion_tokens"])
    except Exception as exc:  # recorded, asserted on by the caller
        with lock:
            result.errors.append(f"{type(exc).__name__}: {exc}")


def prefix_cache_mb(server: Server, admin_key: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", headers=server.auth(admin_key), timeout=60).text
    sizes = re.findall(r"^magistral_prefix_cache_bytes\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(v) for v in sizes) / 2**20


def run_load(server: Server, key: str, streams: int, rounds: int, admin_key: str | None = None) -> LoadResult:
    """`rounds` waves of `streams` concurrent streams; the server's RSS after each wave, and
    (with an admin key) how much of it the prefix cache holds."""
    import psutil

    result, lock = LoadResult(), threading.Lock()
    process = psutil.Process(server.process.pid)
    for wave in range(rounds):
        threads = [threading.Thread(target=_stream, args=(server, key, wave * streams + i, result, lock))
                   for i in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result.requests += streams
        time.sleep(3.0)  # the engine, idle for a second, gives freed memory back
        result.rss_mb.append(process.memory_info().rss / 2**20)
        result.prefix_cache_mb.append(prefix_cache_mb(server, admin_key) if admin_key else 0.0)
    return result


def billed_rows(database_url: str, request_ids: set[str]) -> dict[str, tuple[int, int, str]]:
    store = Store(database_url)
    try:
        with store.session() as s:
            rows = s.scalars(select(UsageRecord).where(UsageRecord.request_id.in_(request_ids)))
            return {r.request_id: (r.prompt_tokens, r.completion_tokens, r.status) for r in rows}
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("soak"), "--no-embedding-model", "--max-active", "16")
    yield srv
    stop_server(srv)


def test_many_concurrent_streams_end_cleanly_and_are_billed_once(soak_server: Server) -> None:
    key = new_key(soak_server.database_url, new_account(soak_server.database_url), "--rpm", "100000",
                  "--tpm", "100000000")
    admin = new_key(soak_server.database_url, new_account(soak_server.database_url), "--admin")
    result = run_load(soak_server, key, streams=64, rounds=2, admin_key=admin)
    assert not result.errors, result.errors[:5]
    assert len(result.billed) == result.requests == 128
    rows = billed_rows(soak_server.database_url, set(result.billed))
    assert {rid: (p, c) for rid, (p, c, _) in rows.items()} == result.billed  # once each, exactly
    assert {status for *_, status in rows.values()} <= {"stop", "length"}
    # flat after the first wave, but for the prefix cache filling up to its budget (new prompts)
    warm = result.rss_without_cache_mb[0]
    assert result.prefix_cache_mb[1] > result.prefix_cache_mb[0] > 0
    assert max(result.rss_without_cache_mb[1:]) < warm + 40, (result.rss_mb, result.prefix_cache_mb)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigkill_mid_stream_bills_every_token_clients_saw(tmp_path: Path, database: str) -> None:
    postgres = PrivatePostgres() if database == "postgresql" else None
    try:
        _sigkill_mid_stream(tmp_path, postgres.url if postgres else None)
    finally:
        if postgres is not None:
            postgres.close()


def _sigkill_mid_stream(tmp_path: Path, database_url: str | None) -> None:
    server = start_server(tmp_path, "--no-embedding-model", "--replica-id", "doomed",
                          database_url=database_url)
    seen: dict[str, int] = {}
    lock, started = threading.Lock(), threading.Barrier(9)

    def client(i: int) -> None:
        body = {"model": MODEL, "stream": True, "max_tokens": 2000, "temperature": 0,
                "messages": [{"role": "user", "content": f"{i}. Write a very long essay about Rome."}]}
        try:
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120,
                              headers=server.auth()) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        if event["choices"][0]["delta"].get("content"):
                            with lock:
                                seen[event["id"]] = seen.get(event["id"], 0) + 1
                                first = seen[event["id"]] == 1
                            if first:
                                started.wait(timeout=120)
        except (httpx.TransportError, threading.BrokenBarrierError):
            pass  # the server died under it

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait(timeout=120)
    time.sleep(0.5)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    for t in threads:
        t.join(timeout=30)
    rows = billed_rows(server.database_url, set(seen))
    assert len(seen) == 8
    for request_id, chunks in seen.items():
        assert chunks <= rows[request_id][1] <= chunks + 3
    restarted = start_server(tmp_path, "--no-embedding-model", "--replica-id", "doomed",
                             database_url=database_url, key=server.key)
    try:
        assert {status for *_, status in billed_rows(server.database_url, set(seen)).values()} == \
            {"interrupted"}  # closed at restart, tokens kept
    finally:
        stop_server(restarted)
