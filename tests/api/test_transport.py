"""Slow and silent clients cannot hold connections: headers and bodies have deadlines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server, start_server, stop_server

HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("transport"), "--no-embedding-model",
                       "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT))
    yield srv
    stop_server(srv)


def _connect(server: Server) -> socket.socket:
    parts = urlsplit(server.base_url)
    conn = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return conn


def _closed_within(conn: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes the connection within `seconds`, and what it sent first."""
    conn.settimeout(seconds)
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
        return True, received
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received


def test_silent_connections_are_closed(strict_server: Server) -> None:
    conns = [_connect(strict_server) for _ in range(20)]
    started = time.monotonic()
    assert all(_closed_within(c, 20)[0] for c in conns)
    assert time.monotonic() - started < 15
    assert strict_server.health()["status"] == "ok"


def test_slowloris_headers_are_cut_off(strict_server: Server) -> None:
    conn = _connect(strict_server)
    request = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {strict_server.key}\r\n")
    started = time.monotonic()
    try:
        for byte in request.encode():  # one byte every 0.2 s: never a whole header block
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > 10:
                break
        closed = False
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    closed = closed or _closed_within(conn, 5)[0]
    assert closed and time.monotonic() - started < 12


def test_a_body_that_never_ends_gets_408(strict_server: Server) -> None:
    conn = _connect(strict_server)
    conn.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {strict_server.key}\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n"
                  "5\r\n{\"mod\r\n").encode())
    closed, answer = _closed_within(conn, BODY_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"error"' in answer
