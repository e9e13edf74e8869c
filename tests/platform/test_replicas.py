"""Several replicas sharing one PostgreSQL and one Redis: limits are exact across them (not
multiplied by the number of replicas), and a replica killed with SIGKILL mid-stream leaves every
token its clients saw billed, and no reservation stuck."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from magistral.platform.ratelimit import RedisRateLimiter
from magistral.platform.store import Store, UsageRecord
from tests.conftest import Server, cli, start_server
from tests.conftest import stop_server as stop

POSTGRES_URL = os.environ.get("MAGISTRAL_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("MAGISTRAL_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not (POSTGRES_URL and REDIS_URL),
                                reason="needs MAGISTRAL_TEST_POSTGRES_URL and _REDIS_URL (.ci/services.sh)")
MODEL = "magistral-medium-latest"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module."""
    import psycopg

    name = f"magistral_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    namespace = f"test-{uuid.uuid4().hex[:8]}"  # a fresh database reuses key ids: fresh Redis keys too
    servers = [start_server(tmp_path_factory.mktemp(f"replica{i}"), "--redis-url", REDIS_URL,
                            "--redis-namespace", namespace, "--replica-id", f"replica-{i}",
                            database_url=database, key="unused")
               for i in range(2)]
    yield servers
    for server in servers:
        stop(server)


def new_key(database: str, *limits: str) -> str:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    cli("accounts", "create", account, "--database-url", database)
    return cli("keys", "create", "--name", "k", "--account", account, "--database-url", database,
               *limits).stdout.strip()


def hammer(replicas: list[Server], key: str, count: int, max_tokens: int = 1) -> list[httpx.Response]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens,
            "temperature": 0}

    def send(i: int) -> httpx.Response:
        return httpx.post(f"{replicas[i % 2].base_url}/v1/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {key}"})
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(send, range(count)))


def test_requests_per_minute_are_exact_across_replicas(replicas: list[Server], database: str) -> None:
    key = new_key(database, "--rpm", "10")
    responses = hammer(replicas, key, 30)
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 20
    served_by = {i % 2 for i, r in enumerate(responses) if r.status_code == 200}
    refused_by = {i % 2 for i, r in enumerate(responses) if r.status_code == 429}
    assert served_by | refused_by == {0, 1}  # both replicas took part


def test_tokens_per_minute_are_exact_across_replicas(replicas: list[Server], database: str) -> None:
    key = new_key(database, "--tpm", "1000000")  # measure one request's size first
    probe = hammer(replicas, key, 1, max_tokens=2)[0].json()["usage"]
    per_request = probe["prompt_tokens"] + 2
    key = new_key(database, "--tpm", str(per_request * 7 + per_request // 2))
    responses = hammer(replicas, key, 24, max_tokens=2)
    assert sum(r.status_code == 200 for r in responses) == 7
    assert all(r.json()["code"] == "rate_limit_tokens" for r in responses if r.status_code == 429)


def test_sigkill_mid_stream_bills_every_token_clients_saw(database: str, tmp_path: Path) -> None:
    namespace = f"kill-{uuid.uuid4().hex[:8]}"
    key = new_key(database)
    flags = ("--redis-url", REDIS_URL, "--redis-namespace", namespace, "--replica-id", "doomed",
             "--max-active", "20")
    server = start_server(tmp_path, *flags, database_url=database, key=key)
    body = {"model": MODEL, "stream": True, "max_tokens": 1500, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long essay about the history of Rome."}]}
    seen: dict[str, int] = {}  # request id → content chunks received
    lock = threading.Lock()
    started = threading.Barrier(21)

    def client(i: int) -> None:
        try:
            question = f"{i}. {body['messages'][0]['content']}"  # twenty different prompts
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=120,
                              json={**body, "messages": [{"role": "user", "content": question}]},
                              headers={"Authorization": f"Bearer {key}"}) as response:
                waited = False
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event["choices"][0]["delta"].get("content"):
                        with lock:
                            seen[event["id"]] = seen.get(event["id"], 0) + 1
                        if not waited:
                            waited = True
                            started.wait(timeout=120)
        except (httpx.TransportError, threading.BrokenBarrierError):
            pass  # the server died under it

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    started.wait(timeout=120)  # every stream has delivered tokens
    time.sleep(0.5)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    for t in threads:
        t.join(timeout=30)
    assert len(seen) == 20

    store = Store(database)
    with store.session() as s:
        mine = select(UsageRecord).where(UsageRecord.replica == "doomed")
        rows = {r.request_id: r for r in s.scalars(mine)}
    for request_id, chunks in seen.items():  # every request a client saw tokens of is billed for them
        assert request_id in rows
        assert chunks <= rows[request_id].completion_tokens <= chunks + 3
    assert "in_progress" in {r.status for r in rows.values()}  # the kill did cut streams short
    limiter = RedisRateLimiter(REDIS_URL, namespace=namespace)
    key_id = int(rows[next(iter(seen))].key_id)
    held = limiter.status(key_id, 10**6, 10**9)  # now, before a restart (slow under load) outlasts the window
    assert held.remaining_requests < 10**6  # the dead server's reservations are in the window …
    later = limiter.status(key_id, 10**6, 10**9, now=time.time() + 61)
    assert (later.remaining_requests, later.remaining_tokens) == (10**6, 10**9)  # … and leave it
    restarted = start_server(tmp_path, *flags, database_url=database, key=key)
    try:
        with store.session() as s:
            statuses = {r.status for r in s.scalars(mine)}
        assert statuses == {"interrupted"}  # closed at restart, tokens kept
    finally:
        stop(restarted)
        store.dispose()
