"""The platform in front of other OpenAI-compatible servers (`magistral serve --upstream`), all
on loopback: a pool of two `magistral serve` upstreams (balancing, the upstream's token counts
billed, one killed mid-stream, a dead one routed around), a vLLM-shaped SSE recording
(reasoning fields → thinking chunks, tool calls passed through), and llama.cpp's own server
where llama-cpp-python[server] is installed."""

from __future__ import annotations

import http.server
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, cli, free_port, start_server, stop_server
from tests.platform.test_soak import billed_rows

ASK = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two plain upstream servers (no keys: as vLLM runs by default), the default model each."""
    servers = [start_server(tmp_path_factory.mktemp(f"upstream{i}"), "--no-platform-for-benchmarks",
                            "--no-embedding-model", "--max-active", "4") for i in range(2)]
    yield servers
    for server in servers:
        if server.process.poll() is None:
            stop_server(server)


def front(tmp: Path, *urls: str, name: str = "pooled") -> Server:
    return start_server(tmp, *[f"--upstream={name}={url}" for url in urls], "--no-embedding-model")


def metrics(server: Server) -> str:
    admin = cli("keys", "create", "--name", "ops", "--admin", "--database-url",
                server.database_url).stdout.strip()
    return httpx.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {admin}"}).text


def test_a_pool_balances_and_bills_the_upstreams_counts(upstreams: list[Server], tmp_path: Path) -> None:
    import openai

    server = front(tmp_path, *(u.base_url for u in upstreams))
    try:
        body = {"model": "pooled", "messages": ASK, "max_tokens": 12, "temperature": 0}
        direct = httpx.post(f"{upstreams[0].base_url}/v1/chat/completions", timeout=120,
                            json={**body, "model": "smollm2-135m-instruct"}).json()
        answer = server.post("/v1/chat/completions", body)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["model"] == "pooled" and data["choices"][0]["message"]["content"]
        assert data["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]  # the upstream's count
        rows = billed_rows(server.database_url, {data["id"]})
        assert rows[data["id"]][:2] == (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"])

        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.key, max_retries=0)
        results: list[str] = []

        def ask(i: int) -> None:
            stream = client.chat.completions.create(model="pooled", messages=ASK, max_tokens=8 + i,
                                                    stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            results.append(text)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and all(results)
        text = metrics(server)
        for upstream in upstreams:  # both took requests
            served = re.search(rf'magistral_upstream_requests_total\{{model="pooled",outcome="ok",'
                               rf'upstream="{re.escape(upstream.base_url)}"\}} (\d+)', text)
            assert served and int(float(served.group(1))) >= 1, text[-2000:]
        models = httpx.get(f"{server.base_url}/v1/models", headers=server.auth()).json()["data"]
        assert [m["id"] for m in models] == ["pooled"]  # no local model was loaded
        refused = server.post("/v1/chat/completions", {**body, "logprobs": True})
        assert refused.status_code == 400 and refused.json()["param"] == "logprobs"
    finally:
        stop_server(server)


def test_a_client_that_hangs_up_cancels_the_upstream_request(upstreams: list[Server], tmp_path: Path) -> None:
    import time

    upstream = upstreams[0]
    server = front(tmp_path, upstream.base_url, name="solo")
    try:
        body = {"model": "solo", "stream": True, "max_tokens": 3000, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a very long essay about Rome."}]}
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120,
                          headers=server.auth()) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    assert upstream.health()["active_sequences"] == 1
                    break  # hang up
        deadline = time.monotonic() + 30
        while upstream.health()["active_sequences"]:  # the upstream stopped generating too
            assert time.monotonic() < deadline, "the upstream kept generating for a client that left"
            time.sleep(0.2)
    finally:
        stop_server(server)


def test_an_upstream_killed_mid_stream_ends_cleanly_and_the_pool_routes_around_it(
        upstreams: list[Server], tmp_path_factory: pytest.TempPathFactory) -> None:
    doomed, survivor = upstreams[1], upstreams[0]
    alone = front(tmp_path_factory.mktemp("alone"), doomed.base_url, name="alone")
    pooled = front(tmp_path_factory.mktemp("pooled"), doomed.base_url, survivor.base_url)
    try:
        body = {"model": "alone", "stream": True, "max_tokens": 2000, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a very long essay about Rome."}]}
        seen, last, done = 0, None, False
        with httpx.stream("POST", f"{alone.base_url}/v1/chat/completions", json=body, timeout=120,
                          headers=alone.auth()) as response:
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    last = json.loads(line[6:])
                    if last["choices"][0]["delta"].get("content"):
                        seen += 1
                        if seen == 5:
                            doomed.process.send_signal(signal.SIGKILL)
                            doomed.process.wait()
        assert done and last["choices"][0]["finish_reason"] == "error"  # a clean end, not a cut
        billed = billed_rows(alone.database_url, {last["id"]})[last["id"]]
        assert billed[1] >= seen  # every chunk the client saw is billed

        for _ in range(4):  # the dead upstream fails before the first token: retried on the other
            answer = pooled.post("/v1/chat/completions",
                                 {"model": "pooled", "messages": ASK, "max_tokens": 6})
            assert answer.status_code == 200, answer.text
        assert httpx.get(f"{pooled.base_url}/health").status_code == 200
        health = f'magistral_upstream_healthy{{model="pooled",upstream="{doomed.base_url}"}} 0.0'
        assert health in metrics(pooled)
    finally:
        stop_server(alone)
        stop_server(pooled)


VLLM_STREAM = [  # recorded from vLLM 0.10 serving a reasoning model with a tool parser
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "The user wants "}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "the weather."},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Let me check."},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
        {"index": 0, "id": "chatcmpl-tool-1", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 57, "completion_tokens": 21, "total_tokens": 78}},
]


class RecordedUpstream:
    """Replays VLLM_STREAM as server-sent events, and lists one model."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                payload = json.dumps({"object": "list", "data": [{"id": "org/reasoner", "object": "model"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def do_POST(self) -> None:  # noqa: N802
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in VLLM_STREAM:
                    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "org/reasoner",
                             **event}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def test_vllm_reasoning_and_tool_calls_become_mistral_shapes(tmp_path: Path) -> None:
    recorded = RecordedUpstream()
    server = start_server(tmp_path, f"--upstream=reasoner={recorded.url}", "--upstream-key", "sk-upstream",
                          "--no-embedding-model")
    try:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]
        body = {"model": "reasoner", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": tools, "tool_choice": "any", "temperature": 0.3}
        data = server.post("/v1/chat/completions", body).json()
        sent = recorded.bodies[-1]
        assert sent["model"] == "org/reasoner" and sent["tool_choice"] == "required"
        assert sent["tools"] == tools
        assert sent["stream"] is True and sent["temperature"] == 0.3
        choice = data["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        thought = choice["message"]["content"][0]
        assert thought["type"] == "thinking" and thought["thinking"] == [
            {"type": "text", "text": "The user wants the weather."}]
        assert choice["message"]["content"][1] == {"type": "text", "text": "Let me check."}
        call = choice["message"]["tool_calls"][0]["function"]
        assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
        usage = data["usage"]
        assert {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
            "prompt_tokens": 57, "completion_tokens": 21, "total_tokens": 78}
        # an upstream's trace is counted by its streamed chunks (an estimate), never past completion
        assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] <= 21

        events = []
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True},
                          headers=server.auth(), timeout=60) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        thinking = [c for e in events for c in (e["choices"][0]["delta"].get("content") or [])
                    if isinstance(c, dict) and c.get("type") == "thinking"]
        assert thinking and events[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert events[-1]["usage"]["completion_tokens"] == 21
        assert recorded.bodies[-1]["stream_options"] == {"include_usage": True}
        for route, extra in (("/v1/completions", {"prompt": "Hi"}), ("/v1/fim/completions", {"prompt": "a"})):
            refused = server.post(route, {"model": "reasoner", **extra})
            assert refused.status_code == 400, (route, refused.text)  # chat only, said clearly
    finally:
        stop_server(server)
        recorded.close()


def test_llama_cpp_server_as_an_upstream(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    import subprocess
    import sys
    import time

    from magistral.model.load import default_gguf_path

    port = free_port()
    llama = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()),
                              "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and llama.poll() is None, "llama.cpp's server did not start"
            time.sleep(0.5)
        server = start_server(tmp_path, f"--upstream=llama=http://127.0.0.1:{port}", "--no-embedding-model")
        data = server.post("/v1/chat/completions",
                           {"model": "llama", "messages": ASK, "max_tokens": 10}).json()
        assert data["choices"][0]["message"]["content"] and data["usage"]["completion_tokens"] > 0
        rows = billed_rows(server.database_url, {data["id"]})
        assert rows[data["id"]][:2] == (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"])
    finally:
        if server is not None:
            stop_server(server)
        llama.terminate()
        llama.wait(timeout=30)


def test_upstream_flags_make_pools_with_keys_from_files(tmp_path: Path) -> None:
    from magistral.engine.backends.upstream import parse_upstreams

    (tmp_path / "key").write_text("sk-from-file\n")
    pools = parse_upstreams(["a=http://127.0.0.1:1", "a=http://127.0.0.1:2/v1", "b=http://127.0.0.1:3"],
                            ["sk-all", f"b=@{tmp_path / 'key'}"])
    assert {name: [(u.url, u.key) for u in pool] for name, pool in pools.items()} == {
        "a": [("http://127.0.0.1:1", "sk-all"), ("http://127.0.0.1:2", "sk-all")],
        "b": [("http://127.0.0.1:3", "sk-from-file")]}
    for bad in (["a"], ["=http://x"], ["a=ftp://x"]):
        with pytest.raises(ValueError):
            parse_upstreams(bad, None)
