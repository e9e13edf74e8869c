"""Bad requests get a Mistral-shaped 4xx and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server

GOOD = {"model": "magistral-medium-latest", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3, "temperature": 0}
USER = {"role": "user", "content": "Hi"}


def post(server: Server, body: object = None, *, content: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.key}"}
    if content is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(f"{server.base_url}/v1/chat/completions", content=content,
                          headers=headers, timeout=60)
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def assert_error(response: httpx.Response, status: int, type_: str, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error" and body["type"] == type_
    assert {"message", "param", "code"} <= body.keys()
    assert fragment.lower() in body["message"].lower()
    return body


CASES = [
    ("missing model", {"messages": [USER]}, 422, "model"),
    ("missing messages", {"model": "magistral-medium-latest"}, 422, "messages"),
    ("empty messages", {**GOOD, "messages": []}, 422, "messages"),
    ("temperature too high", {**GOOD, "temperature": 3}, 422, "temperature"),
    ("negative max_tokens", {**GOOD, "max_tokens": -1}, 422, "max_tokens"),
    ("top_p above 1", {**GOOD, "top_p": 1.5}, 422, "top_p"),
    ("unknown role", {**GOOD, "messages": [{"role": "robot", "content": "x"}]}, 422, "messages"),
    ("content is a number", {**GOOD, "messages": [{"role": "user", "content": 5}]}, 422, "content"),
    ("unknown chunk type", {**GOOD, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     422, "messages"),
    ("messages not a list", {**GOOD, "messages": "hello"}, 422, "messages"),
    ("last message from assistant", {**GOOD, "messages": [USER, {"role": "assistant", "content": "x"}]},
     400, "expected last role"),
    ("tool without a call", {**GOOD, "messages": [USER, {"role": "tool", "content": "1",
                                                         "tool_call_id": "abcdefghi"}]},
     400, "tool"),
    ("ends with system", {**GOOD, "messages": [USER, {"role": "system", "content": "x"}]}, 400, "system"),
    ("image to text-only model", {**GOOD, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]},
     400, "does not support images"),
    ("boolean temperature", {**GOOD, "temperature": True}, 422, "temperature"),
    ("string max_tokens", {**GOOD, "max_tokens": "10"}, 422, "max_tokens"),
    ("string stream", {**GOOD, "stream": "yes"}, 422, "stream"),
    ("fractional n", {**GOOD, "n": 1.5}, 422, "n"),
    ("tool_choice naming no tool", {**GOOD, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_request(server: Server, body: dict, status: int, fragment: str) -> None:
    body_json = assert_error(post(server, body), status, "invalid_request_error", fragment)
    if status == 422:
        assert body_json["detail"] and {"loc", "msg", "type"} <= body_json["detail"][0].keys()


def test_malformed_json(server: Server) -> None:
    assert_error(post(server, content=b'{"model": "x", "messages": ['), 400,
                 "invalid_request_error", "not valid JSON")


def test_a_body_without_a_json_content_type_is_400(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{bad",  # as curl -d sends it
                          headers={"Authorization": f"Bearer {server.key}",
                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 400, "invalid_request_error", "Content-Type: application/json")


def test_unknown_model_is_404(server: Server) -> None:
    body = assert_error(post(server, {**GOOD, "model": "gpt-17"}), 404, "invalid_request_error", "gpt-17")
    assert body["param"] == "model"
    response = httpx.get(f"{server.base_url}/v1/models/gpt-17",
                         headers={"Authorization": f"Bearer {server.key}"})
    assert_error(response, 404, "invalid_request_error", "gpt-17")


def test_prompt_longer_than_context_is_400(server: Server) -> None:
    long_text = "word " * 9000  # > 8192 tokens
    body = {**GOOD, "messages": [{"role": "user", "content": long_text}]}
    assert_error(post(server, body), 400, "invalid_request_error", "maximum context length")


def test_unknown_route_is_404_in_error_shape(server: Server) -> None:
    response = httpx.get(f"{server.base_url}/v1/nothing-here",
                         headers={"Authorization": f"Bearer {server.key}"})
    assert_error(response, 404, "invalid_request_error")


def test_server_still_serves_after_bad_requests(server: Server) -> None:
    for case in CASES[:5]:
        post(server, case[1])
    post(server, content=b"not json at all")
    response = post(server, GOOD)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


def test_openai_only_fields_are_accepted(server: Server) -> None:
    body = {k: v for k, v in GOOD.items() if k != "max_tokens"}
    response = post(server, {**body, "seed": 5, "max_completion_tokens": 2, "stream_options":
                             {"include_usage": True}, "metadata": {"a": "b"}, "user": "me"})
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 2


def test_oversized_body_is_413(server: Server) -> None:
    """The size is judged from Content-Length, before any of the body is read."""
    import socket
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {200 * 1024 * 1024}\r\n\r\n{{}}").encode())
        reply = b""
        while b"exceeds" not in reply or not reply.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    status_line, _, rest = reply.decode().partition("\r\n")
    assert " 413 " in status_line
    assert '"type":"invalid_request_error"' in rest and "exceeds" in rest


def test_lone_surrogates_are_4xx_not_500(server: Server) -> None:
    for raw in ('{"model": "magistral-medium-latest", "messages": [{"role": "user", "content": "\\ud800"}]}',
                '{"model": "\\udfff", "messages": [{"role": "user", "content": "hi"}]}'):
        assert_error(post(server, content=raw.encode()), 422, "invalid_request_error", "surrogate")
    body = b'{"model": "mistral-embed", "input": "\\ud83d"}'
    embed = httpx.post(f"{server.base_url}/v1/embeddings", content=body, timeout=30,
                       headers={**server.auth(), "Content-Type": "application/json"})
    assert_error(embed, 422, "invalid_request_error", "surrogate")
    assert post(server, GOOD).status_code == 200


def test_out_of_range_dates_and_seeds_are_4xx(server: Server) -> None:
    for month in ("9999-12", "0001-01", "2026-13"):
        response = httpx.get(f"{server.base_url}/v1/usage/invoice", params={"month": month},
                             headers=server.auth(), timeout=30)
        assert_error(response, 400, "invalid_request_error", "month")
    assert_error(post(server, {**GOOD, "random_seed": 2**64}), 422, "invalid_request_error", "random_seed")
    assert_error(post(server, {**GOOD, "seed": 2**70}), 422, "invalid_request_error", "random_seed")


def test_chunked_body_over_the_limit_is_413_once_the_limit_is_read(server: Server) -> None:
    """No Content-Length to judge by: the bytes actually received count, and reading stops there."""
    import select
    import socket
    host, port = server.base_url.removeprefix("http://").split(":")
    piece = b"x" * (1 << 20)
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        try:
            for _ in range(200):  # 200 MiB, well past the 128 MiB limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                if select.select([sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: its answer is already there
        while b"exceeds" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"exceeds the limit" in reply
    assert server.health()["status"] == "ok"
