"""Every /v1 route needs a valid, unrevoked Bearer key; /health does not."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, cli, create_key

ROUTES = [("GET", "/v1/models"), ("GET", "/v1/models/magistral-medium-latest"),
          ("POST", "/v1/chat/completions")]
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
