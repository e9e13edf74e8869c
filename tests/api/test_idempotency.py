"""Idempotency-Key: a retried request gets the first answer again and is billed once."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx

from tests.conftest import Server, new_account, new_key

MODEL = "smollm2-135m-instruct"


def _post(server: Server, key: str, body: dict, token: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300,
                      headers={**server.auth(key), "Idempotency-Key": token})


def _requests_billed(server: Server, key: str) -> tuple[int, int]:
    rows = httpx.get(f"{server.base_url}/v1/usage", params={"group_by": "model"}, headers=server.auth(key),
                     timeout=30).json()["data"]
    return sum(r["requests"] for r in rows), sum(r["completion_tokens"] for r in rows)


def test_a_retry_replays_the_answer_and_is_billed_once(server: Server) -> None:
    key = new_key(server.database_url, new_account(server.database_url))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 12}
    token = uuid.uuid4().hex
    first, again = _post(server, key, body, token), _post(server, key, body, token)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    streamed = {**body, "stream": True}
    token = uuid.uuid4().hex
    one, two = _post(server, key, streamed, token), _post(server, key, streamed, token)
    assert one.text == two.text and one.text.endswith("data: [DONE]\n\n")
    completion = first.json()["usage"]["completion_tokens"]
    assert _requests_billed(server, key) == (2, completion + _streamed_tokens(one.text))


def _streamed_tokens(text: str) -> int:
    last = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")][-1]
    return last["usage"]["completion_tokens"]


def test_reuse_with_another_body_is_refused_and_a_running_first_gets_409(server: Server) -> None:
    key = new_key(server.database_url, new_account(server.database_url))
    token = uuid.uuid4().hex
    slow = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 80, "temperature": 0}
    results: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", _post(server, key, slow, token)))
    first.start()
    time.sleep(1.0)
    while_running = _post(server, key, slow, token)
    first.join()
    assert results["first"].status_code == 200
    assert while_running.status_code == 409 and while_running.json()["param"] == "Idempotency-Key"
    other = _post(server, key, {**slow, "max_tokens": 3}, token)
    assert other.status_code == 422 and "different request" in other.json()["message"]
    assert _requests_billed(server, key)[0] == 1
