"""Outages under a running server. A database that vanishes or is replaced: requests are refused with
503 (nothing served unbilled), /health says so; the process does not crash. A rate limiter
that cannot be reached: limits fail closed (503)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server, stop_server

BODY = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("what", ["deleted", "replaced"])
def test_a_vanished_database_gets_503_not_unbilled_answers(tmp_path: Path, what: str) -> None:
    server = start_server(tmp_path, "--no-embedding-model")
    try:
        assert server.post("/v1/chat/completions", BODY).status_code == 200
        database = tmp_path / "magistral.db"
        if what == "deleted":
            for part in tmp_path.glob("magistral.db*"):
                part.unlink()
        else:
            shutil.copy(database, tmp_path / "copy.db")
            (tmp_path / "copy.db").replace(database)
        for _ in range(3):
            refused = server.post("/v1/chat/completions", BODY)
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["type"] == "server_error" and "database" in body["message"]
            assert refused.headers["retry-after"] == "30"
        health = httpx.get(f"{server.base_url}/health", timeout=10)
        assert health.status_code == 503 and what in health.json()["problem"]
        assert server.process.poll() is None
    finally:
        stop_server(server)


def test_an_unreachable_rate_limiter_fails_closed_with_503(tmp_path: Path) -> None:
    """Redis gone (killed; nothing listens on its port): requests are refused, not served
    unlimited, and /health says so, so that a load balancer takes the replica out."""
    from tests.platform.services import PrivateRedis

    redis = PrivateRedis()
    server = start_server(tmp_path, "--no-embedding-model", "--redis-url", redis.url)
    try:
        redis.stop()
        for stream in (False, True):
            refused = server.post("/v1/chat/completions", {**BODY, "stream": stream})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5" and "rate limits" in refused.json()["message"]
        health = httpx.get(f"{server.base_url}/health", timeout=10)
        assert health.status_code == 503 and "Redis" in health.json()["problem"]
    finally:
        stop_server(server)
        redis.close()
