"""Chaos under load: PostgreSQL and Redis restarted while clients keep sending requests. While a
service is down requests fail cleanly (503 in the error shape, or a stream that ends with an
`error` chunk and `[DONE]`), never a 500 or a dropped connection; after it returns the server
serves again by itself; and every token a client received is billed, once.
(SIGKILL mid-stream on SQLite and PostgreSQL: tests/platform/test_soak.py.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import Server, new_account, new_key, start_server, stop_server
from tests.platform.services import PrivatePostgres, PrivateRedis
from tests.platform.test_soak import billed_rows

MODEL = "smollm2-135m-instruct"


@dataclass
class Outcome:
    kind: str  # "ok", "refused" (503 in the error shape), "stream error" (error chunk + [DONE]), "bad"
    request_id: str | None = None
    usage: tuple[int, int] | None = None  # (prompt, completion) the client was told
    seen: int = 0  # content chunks a stream delivered
    detail: str = ""
    at: float = field(default_factory=time.monotonic)


def _one(server: Server, key: str, i: int) -> Outcome:
    stream = i % 2 == 0
    body = {"model": MODEL, "stream": stream, "max_tokens": 6 + i % 10, "temperature": 0.7,
            "messages": [{"role": "user", "content": f"Say something about the number {i}."}]}
    try:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120,
                          headers=server.auth(key)) as response:
            if response.status_code == 503:
                error = json.loads(response.read())
                shaped = error.get("object") == "error" and error.get("message") and error.get("error")
                return Outcome("refused" if shaped else "bad", detail=str(error)[:200])
            if response.status_code != 200:
                return Outcome("bad", detail=f"HTTP {response.status_code}: {response.read()[:200]!r}")
            if not stream:
                data = json.loads(response.read())
                usage = data["usage"]
                return Outcome("ok", data["id"], (usage["prompt_tokens"], usage["completion_tokens"]))
            last, done, seen = None, False, 0
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    last = json.loads(line[6:])
                    seen += bool(last["choices"] and last["choices"][0]["delta"].get("content"))
            finish = last["choices"][0]["finish_reason"] if last and last["choices"] else None
            if not done:
                return Outcome("bad", detail=f"stream without [DONE] (finish {finish})")
            if finish == "error":
                return Outcome("stream error", last["id"], seen=seen)
            usage = last["usage"]
            return Outcome("ok", last["id"], (usage["prompt_tokens"], usage["completion_tokens"]), seen)
    except (httpx.TransportError, ValueError, KeyError) as exc:
        return Outcome("bad", detail=f"{type(exc).__name__}: {exc}")


class Load:
    """`clients` threads sending requests one after another until stopped."""

    def __init__(self, server: Server, key: str, clients: int = 4):
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._threads = [threading.Thread(target=self._client, args=(server, key)) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self, server: Server, key: str) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._count += 1
                i = self._count
            outcome = _one(server, key, i)
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.kind == "refused":
                time.sleep(0.05)  # as a client backing off would

    def wait_for(self, kind: str, count: int, since: float, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while sum(o.kind == kind and o.at >= since for o in list(self.outcomes)) < count:
            assert time.monotonic() < deadline, f"no {count} {kind!r} outcomes: {self.summary()}"
            time.sleep(0.1)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        return self.outcomes

    def summary(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for outcome in list(self.outcomes):
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
        return kinds


def _health(server: Server) -> int:
    return httpx.get(f"{server.base_url}/health", timeout=30).status_code


def restart_under_load(server: Server, stop_service: Callable[[], None], start_service: Callable[[], None],
                       down_seconds: float = 3.0) -> list[Outcome]:
    """Serve, take the service away for a while, bring it back, serve again: the outcomes."""
    key = new_key(server.database_url, new_account(server.database_url), "--rpm", "100000",
                  "--tpm", "100000000")
    load = Load(server, key)
    try:
        load.wait_for("ok", 8, since=0)
        stop_service()
        went_down = time.monotonic()
        load.wait_for("refused", 4, since=went_down)
        assert _health(server) == 503  # a load balancer takes the replica out
        time.sleep(max(0.0, down_seconds - (time.monotonic() - went_down)))
        start_service()
        came_back = time.monotonic()
        load.wait_for("ok", 8, since=came_back)  # the server found the service again by itself
        assert _health(server) == 200
    finally:
        outcomes = load.stop()
    bad = [o.detail for o in outcomes if o.kind == "bad"]
    assert not bad, bad[:5]  # no 500, no dropped connection, no stream without its end
    return outcomes


def assert_billed_once(database_url: str, outcomes: list[Outcome]) -> None:
    """Every answer a client got is billed with the tokens it was told; a stream cut short by
    the outage is billed for at least the chunks it delivered."""
    # a stream that failed before its first token delivered nothing: it may leave no row
    served = {o.request_id: o for o in outcomes if o.request_id and (o.kind == "ok" or o.seen)}
    rows = billed_rows(database_url, set(served))
    for request_id, outcome in served.items():
        assert request_id in rows, f"{request_id} ({outcome.kind}) was served but not billed"
        prompt, completion, _ = rows[request_id]
        if outcome.kind == "ok":
            assert (prompt, completion) == outcome.usage
        else:
            assert completion >= outcome.seen


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    database = PrivatePostgres()
    yield database
    database.close()


def test_postgres_restarted_under_load(postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
                                       ) -> None:
    server = start_server(tmp_path_factory.mktemp("pg-chaos"), "--no-embedding-model", "--max-active", "8",
                          database_url=postgres.url)
    try:
        outcomes = restart_under_load(server, postgres.stop, postgres.start)
    finally:
        stop_server(server)
    assert_billed_once(postgres.url, outcomes)


def test_redis_restarted_under_load_fails_closed_then_serves(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Limits fail closed while Redis is down (documented): refused, not served unmetered."""
    redis = PrivateRedis()
    tmp = tmp_path_factory.mktemp("redis-chaos")
    server = start_server(tmp, "--no-embedding-model", "--max-active", "8", "--redis-url", redis.url)
    try:
        outcomes = restart_under_load(server, redis.stop, redis.start)
        refusals = [o.detail for o in outcomes if o.kind == "refused"]
        assert all("rate limit" in r.lower() or "limiter" in r.lower() for r in refusals), refusals[:3]
    finally:
        stop_server(server)
        redis.close()
    assert_billed_once(server.database_url, outcomes)
