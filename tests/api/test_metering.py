"""One usage row per request that reached the model, written before its response ends."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import select

from magistral.platform.store import Store, UsageRecord
from tests.conftest import Server


def usage_row(server: Server, request_id: str, timeout: float = 10.0) -> UsageRecord:
    store = Store(server.database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with store.session() as s:
                row = s.scalar(select(UsageRecord).where(UsageRecord.request_id == request_id))
            if row is not None or time.monotonic() > deadline:
                assert row is not None, f"no usage row for {request_id}"
                return row
            time.sleep(0.05)
    finally:
        store.dispose()


def headers(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def test_completion_writes_one_usage_row(server: Server) -> None:
    body = {"model": "magistral-medium-latest", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body,
                          headers=headers(server), timeout=60).json()
    row = usage_row(server, response["id"], timeout=0)  # already there when the response arrived
    assert (row.prompt_tokens, row.completion_tokens) == (
        response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])
    assert row.model == "smollm2-135m-instruct" and row.status in ("stop", "length")
    assert row.latency_ms >= 0


def test_streamed_completion_is_metered_before_done(server: Server) -> None:
    body = {"model": "magistral-medium-latest", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 6, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers=headers(server), timeout=60) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        row = usage_row(server, last["id"], timeout=0)  # written before [DONE] was sent
    assert row.completion_tokens == last["usage"]["completion_tokens"]


def test_client_hanging_up_mid_stream_is_billed_and_frees_the_slot(server: Server) -> None:
    server.wait_idle()
    body = {"model": "magistral-medium-latest", "stream": True, "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long essay about the history of Rome."}]}
    seen = 0
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers=headers(server), timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                request_id = json.loads(line[6:])["id"]
                seen += 1
            if seen == 6:
                break  # hang up after a few tokens
    assert server.wait_idle(timeout=10)["active_sequences"] == 0
    row = usage_row(server, request_id)
    assert row.status == "disconnected"
    assert 5 <= row.completion_tokens < 2000


def test_non_streamed_client_hanging_up_stops_generation(server: Server) -> None:
    server.wait_idle()
    body = {"model": "magistral-medium-latest", "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long essay about the history of Rome."}]}
    warm = {**body, "max_tokens": 1}  # the first request of a fresh server pays one-off set-up costs
    httpx.post(f"{server.base_url}/v1/chat/completions", json=warm, headers=headers(server), timeout=60)
    try:
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers(server),
                   timeout=2.5)
    except httpx.ReadTimeout:
        pass  # the client gave up waiting and closed the connection
    assert server.wait_idle(timeout=10)["active_sequences"] == 0
    store = Store(server.database_url)
    try:
        with store.session() as s:
            row = s.scalars(select(UsageRecord).order_by(UsageRecord.id.desc())).first()
    finally:
        store.dispose()
    assert row.status == "disconnected" and 0 < row.completion_tokens < 2000


def test_32_concurrent_streams_of_mixed_lengths(server: Server) -> None:
    import concurrent.futures

    def stream(i: int) -> tuple[str, str, int]:
        body = {"model": "magistral-medium-latest", "stream": True, "temperature": 0,
                "max_tokens": 4 + (i % 4) * 6,
                "messages": [{"role": "user",
                              "content": f"Say something about the number {i}. " * (1 + i % 3)}]}
        text, finish, usage = "", None, None
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                          headers=headers(server), timeout=300) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"][0]
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
                usage = json.loads(line[6:]).get("usage", usage)
        return text, finish, usage["completion_tokens"]

    server.wait_idle()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(stream, range(32)))
    for i, (text, finish, completion) in enumerate(results):
        assert finish in ("stop", "length") and text.strip(), (i, text, finish)
        assert 0 < completion <= 4 + (i % 4) * 6
    assert server.wait_idle()["active_sequences"] == 0
