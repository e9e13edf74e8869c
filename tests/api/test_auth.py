"""Every /v1 route needs a valid, unrevoked Bearer key; /health does not."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, cli, create_key

ROUTES = [("GET", "/v1/models"), ("GET", "/v1/models/magistral-medium-latest"),
          ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
          ("POST", "/v1/fim/completions"), ("POST", "/tokenize"), ("GET", "/tokenizer_info"),
          ("GET", "/v1/usage")]
BODY = {"model": "magistral-medium-latest", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2}


def call(server: Server, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, server.base_url + path, headers=headers, timeout=60,
                         json=BODY if method == "POST" else None)


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer mg-not-a-real-key"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"Authorization": "Bearer"}],
                         ids=["missing", "unknown", "wrong-scheme", "empty"])
def test_refused_without_a_valid_key(server: Server, method: str, path: str, headers: dict) -> None:
    response = call(server, method, path, headers)
    assert response.status_code == 401
    body = response.json()
    assert body["object"] == "error" and body["type"] == "authentication_error"


def test_health_and_docs_need_no_key(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.base_url}/docs").status_code == 200
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]


def test_revoked_key_is_refused(server: Server) -> None:
    key = create_key(server.database_url, "to-revoke")
    headers = {"Authorization": f"Bearer {key}"}
    assert call(server, "GET", "/v1/models", headers).status_code == 200
    listing = cli("keys", "list", "--database-url", server.database_url).stdout
    key_id = next(line.split()[0] for line in listing.splitlines() if "to-revoke" in line)
    cli("keys", "revoke", key_id, "--database-url", server.database_url)
    response = call(server, "GET", "/v1/models", headers)
    assert response.status_code == 401 and response.json()["type"] == "authentication_error"
    assert "revoked" in cli("keys", "list", "--database-url", server.database_url).stdout


def test_the_key_is_checked_before_the_body_is_read(server: Server) -> None:
    """Without a key, nothing of the body is read: bad JSON and a huge body both get 401."""
    bad = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{not json", timeout=30,
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 401
    with_key = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{not json", timeout=30,
                          headers={"Content-Type": "application/json", **server.auth()})
    assert with_key.status_code == 400

    import socket
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:  # announces 100 MB, sends none
        sock.sendall((f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode())
        reply = b""
        while b"authentication_error" not in reply:  # headers and body may come in separate reads
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 401") and b"authentication_error" in reply
