"""Shared fixtures: the real default model, and a real `magistral serve` on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from magistral.chat.tokenizer import GGUFTokenizer
from magistral.model.load import LoadedModel, load_gguf

MAGISTRAL = [sys.executable, "-m", "magistral.cli"]


@pytest.fixture(scope="session")
def loaded() -> LoadedModel:
    return load_gguf()


@pytest.fixture(scope="session")
def tokenizer(loaded: LoadedModel) -> GGUFTokenizer:
    return GGUFTokenizer(loaded.metadata)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAGISTRAL, *args], capture_output=True, text=True, check=check,
                          timeout=120)


def create_key(database_url: str, name: str = "test") -> str:
    return cli("keys", "create", "--name", name, "--database-url", database_url).stdout.strip()


@dataclass
class Server:
    base_url: str
    database_url: str
    key: str
    process: subprocess.Popen

    def health(self) -> dict:
        return httpx.get(f"{self.base_url}/health", timeout=10).json()

    def wait_idle(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.health()
            if state["active_sequences"] == 0 and state["queued_sequences"] == 0:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"server still busy: {state}")
            time.sleep(0.05)


def start_server(tmp: Path, *extra: str) -> Server:
    database_url = f"sqlite:///{tmp / 'magistral.db'}"
    port = free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [*MAGISTRAL, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--database-url", database_url, "--log-level", "warning", *extra],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError((tmp / "server.log").read_text())
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start: " + (tmp / "server.log").read_text())
        time.sleep(0.25)
    return Server(base_url, database_url, create_key(database_url), process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.process.terminate()
    try:
        srv.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.process.kill()
