"""Thinking tokens through a real server: a reasoning model's [THINK]…[/THINK] tokens (markers
included) counted exactly for whole answers, streams and n > 1, reported in `usage` (OpenAI's
`completion_tokens_details.reasoning_tokens`, read by both official SDKs), stored with the usage
row, and exact when a stream is cut short: the client leaves, or the server is killed.

The model is the tiny random Mistral 3 checkpoint (a v13 tekken vocabulary with [THINK] and
[/THINK]); a logit bias on both markers and a seed make it write traces, and the response's
logprobs list every token it generated, so each count is checked against the tokens themselves."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from magistral.chat.tekken import V13_EXTRA
from magistral.platform.store import Store, UsageRecord
from tests.conftest import Server, start_server, stop_server

MODEL = "tiny-mistral3"
THINK, END_THINK = "[THINK]", "[/THINK]"
MARKERS = {str(rank): 10 for rank, name in V13_EXTRA.items() if name in (THINK, END_THINK)}


def expected_thinking(tokens: list[str]) -> int:
    """The tokens of every [THINK]…[/THINK] span, both markers included; an open span counts to
    the end (a stray [/THINK] outside a trace is text)."""
    count, thinking = 0, False
    for token in tokens:
        if thinking:
            count += 1
            thinking = token != END_THINK
        elif token == THINK:
            count, thinking = count + 1, True
    return count


def body(seed: int, max_tokens: int = 24, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "max_tokens": max_tokens, "temperature": 1.0, "random_seed": seed, "logit_bias": MARKERS,
            "logprobs": True, **extra}


def row_of(database_url: str, request_id: str) -> UsageRecord | None:
    store = Store(database_url)
    try:
        with store.session() as s:
            return s.scalar(select(UsageRecord).where(UsageRecord.request_id == request_id))
    finally:
        store.dispose()


def tokens_of(choice_logprobs: dict[str, Any]) -> list[str]:
    return [entry["token"] for entry in choice_logprobs["content"]]


@pytest.fixture(scope="module")
def reasoning_server(mistral3_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its own server: the last test kills it."""
    srv = start_server(tmp_path_factory.mktemp("thinking"), "--model", str(mistral3_checkpoint),
                       "--no-embedding-model")
    yield srv
    if srv.process.poll() is None:
        stop_server(srv)


def test_whole_answers_count_thinking_tokens_exactly(reasoning_server: Server) -> None:
    closed_traces = 0
    for seed in range(6):
        for n in (1, 2):
            response = reasoning_server.post("/v1/chat/completions", body(seed, n=n))
            assert response.status_code == 200, response.text
            answer = response.json()
            per_choice = [tokens_of(c["logprobs"]) for c in answer["choices"]]
            usage = answer["usage"]
            thinking = usage["completion_tokens_details"]["reasoning_tokens"]
            assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens",
                                  "completion_tokens_details"}
            assert usage["completion_tokens"] == sum(map(len, per_choice))  # the existing fields unchanged
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert thinking == sum(expected_thinking(t) for t in per_choice), (seed, n, per_choice)
            assert 0 <= thinking <= usage["completion_tokens"]
            row = row_of(reasoning_server.database_url, answer["id"])
            assert (row.completion_tokens, row.thinking_tokens) == (usage["completion_tokens"], thinking)
            closed_traces += sum(END_THINK in t[t.index(THINK):] for t in per_choice if THINK in t)
    assert closed_traces >= 3  # the seeds give traces that open and close, not only open ones


def _stream(server: Server, request: dict[str, Any]) -> tuple[str, dict[int, list[str]], dict[str, Any]]:
    """(request id, each choice's tokens, the usage on the last chunk) of a whole stream."""
    tokens: dict[int, list[str]] = {}
    usage: dict[str, Any] = {}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**request, "stream": True},
                      headers=server.auth(), timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            choice = event["choices"][0]
            if choice.get("logprobs"):
                tokens.setdefault(choice["index"], []).extend(tokens_of(choice["logprobs"]))
            usage = event.get("usage") or usage
    return event["id"], tokens, usage


def test_streams_count_thinking_tokens_exactly(reasoning_server: Server) -> None:
    for seed in (0, 3, 4):
        for n in (1, 2):
            request_id, tokens, usage = _stream(reasoning_server, body(seed, n=n))
            thinking = usage["completion_tokens_details"]["reasoning_tokens"]
            assert usage["completion_tokens"] == sum(map(len, tokens.values()))
            assert thinking == sum(expected_thinking(t) for t in tokens.values()), (seed, n, tokens)
            assert thinking <= usage["completion_tokens"]
            row = row_of(reasoning_server.database_url, request_id)
            assert (row.completion_tokens, row.thinking_tokens) == (usage["completion_tokens"], thinking)


def test_the_official_sdks_read_the_thinking_count(reasoning_server: Server) -> None:
    from mistralai.client import Mistral
    from openai import OpenAI

    request = body(4)
    expected = reasoning_server.post("/v1/chat/completions", request).json()["usage"]
    assert expected["completion_tokens_details"]["reasoning_tokens"] > 0
    openai = OpenAI(base_url=f"{reasoning_server.base_url}/v1", api_key=reasoning_server.key, max_retries=0)
    usage = openai.chat.completions.create(
        model=MODEL, messages=request["messages"], max_tokens=24, temperature=1.0, seed=4,
        logit_bias=MARKERS, logprobs=True).usage
    assert usage.completion_tokens_details.reasoning_tokens == \
        expected["completion_tokens_details"]["reasoning_tokens"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected["prompt_tokens"],
                                                             expected["completion_tokens"])
    mistral = Mistral(api_key=reasoning_server.key, server_url=reasoning_server.base_url)
    answer = mistral.chat.complete(model=MODEL, messages=request["messages"], max_tokens=24, temperature=1.0,
                                   random_seed=4)  # the SDK keeps the field, unknown to it, as is
    details = answer.usage.additional_properties["completion_tokens_details"]
    assert 0 <= details["reasoning_tokens"] <= answer.usage.completion_tokens


def test_v1_usage_reports_the_thinking_tokens_of_the_rows(reasoning_server: Server) -> None:
    """The daily aggregate, advanced with every streamed checkpoint, equals the rows' sums."""
    reasoning_server.wait_idle()
    report = httpx.get(f"{reasoning_server.base_url}/v1/usage", params={"group_by": "model"},
                       headers=reasoning_server.auth(), timeout=30).json()
    [line] = [entry for entry in report["data"] if entry["model"] == MODEL]
    store = Store(reasoning_server.database_url)
    try:
        with store.session() as s:
            rows = s.execute(select(UsageRecord.completion_tokens, UsageRecord.thinking_tokens)).all()
    finally:
        store.dispose()
    completion, thinking = (sum(column) for column in zip(*rows, strict=True))
    assert (line["completion_tokens"], line["thinking_tokens"]) == (completion, thinking)
    assert 0 < line["thinking_tokens"] < line["completion_tokens"]


def _reference(server: Server, seed: int, max_tokens: int) -> list[str]:
    """Every token the seeded request generates when nobody interrupts it."""
    answer = server.post("/v1/chat/completions", body(seed, max_tokens=max_tokens)).json()
    return tokens_of(answer["choices"][0]["logprobs"])


def _wait_for_final_row(server: Server, request_id: str) -> UsageRecord:
    server.wait_idle(timeout=30)
    deadline = time.monotonic() + 10
    while (row := row_of(server.database_url, request_id)) is None or row.status == "in_progress":
        assert time.monotonic() < deadline, "the request's row was not finished"
        time.sleep(0.05)
    return row


def test_a_stream_cut_short_by_its_client_bills_the_thinking_it_generated(reasoning_server: Server) -> None:
    reference = _reference(reasoning_server, seed=7, max_tokens=600)
    assert expected_thinking(reference) > 0
    seen: list[str] = []
    with httpx.stream("POST", f"{reasoning_server.base_url}/v1/chat/completions",
                      json={**body(7, max_tokens=600), "stream": True}, headers=reasoning_server.auth(),
                      timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                seen += tokens_of(event["choices"][0].get("logprobs") or {"content": []})
            if len(seen) >= 40:
                break  # hang up mid-stream
    row = _wait_for_final_row(reasoning_server, event["id"])
    assert row.status == "disconnected" and 40 <= row.completion_tokens < 600
    assert seen == reference[:len(seen)]  # the same tokens as the uninterrupted run
    assert row.thinking_tokens == expected_thinking(reference[:row.completion_tokens])
    assert 0 < row.thinking_tokens < row.completion_tokens  # both traces and answer in what was billed


def test_a_whole_answer_abandoned_by_its_client_bills_the_thinking_it_generated(reasoning_server: Server
                                                                                ) -> None:
    started = time.monotonic()
    reference = _reference(reasoning_server, seed=8, max_tokens=800)
    whole = time.monotonic() - started
    with pytest.raises(httpx.ReadTimeout):  # the client gives up early and closes the connection
        httpx.post(f"{reasoning_server.base_url}/v1/chat/completions", json=body(8, max_tokens=800),
                   headers=reasoning_server.auth(), timeout=whole / 4)
    reasoning_server.wait_idle(timeout=30)
    store = Store(reasoning_server.database_url)
    try:
        with store.session() as s:
            row = s.scalars(select(UsageRecord).order_by(UsageRecord.id.desc())).first()
    finally:
        store.dispose()
    assert row.status == "disconnected" and 0 < row.completion_tokens < len(reference)
    assert row.thinking_tokens == expected_thinking(reference[:row.completion_tokens])
    assert 0 < row.thinking_tokens < row.completion_tokens  # both traces and answer in what was billed


def test_a_server_killed_mid_stream_leaves_the_thinking_the_client_saw_billed(reasoning_server: Server
                                                                               ) -> None:
    """Runs last: it kills the module's server (SIGKILL), then reads the row it left."""
    reference = _reference(reasoning_server, seed=9, max_tokens=600)
    seen: list[str] = []
    with httpx.stream("POST", f"{reasoning_server.base_url}/v1/chat/completions",
                      json={**body(9, max_tokens=600), "stream": True}, headers=reasoning_server.auth(),
                      timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                seen += tokens_of(event["choices"][0].get("logprobs") or {"content": []})
            if len(seen) >= 60:
                os.kill(reasoning_server.process.pid, signal.SIGKILL)
                break
    reasoning_server.process.wait(timeout=20)
    row = row_of(reasoning_server.database_url, event["id"])
    assert row.status == "in_progress"  # as the killed server left it
    assert len(seen) <= row.completion_tokens < 600  # every token the client saw is billed
    assert row.thinking_tokens == expected_thinking(reference[:row.completion_tokens])
    assert 0 < row.thinking_tokens < row.completion_tokens  # both traces and answer in what was billed
    assert row.thinking_tokens <= row.completion_tokens
