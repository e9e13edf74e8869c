"""Shared fixtures: the real default model, and a real `magistral serve` on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
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
    """A key whose limits the tests never reach (limits have tests of their own)."""
    return cli("keys", "create", "--name", name, "--rpm", "1000000", "--tpm", "1000000000",
               "--database-url", database_url).stdout.strip()


def new_account(database_url: str, *extra: str) -> str:
    """A fresh active account (extra: CLI flags such as --tier or --status)."""
    name = f"acct-{uuid.uuid4().hex[:8]}"
    cli("accounts", "create", name, "--database-url", database_url, *extra)
    return name


def new_key(database_url: str, account: str, *extra: str) -> str:
    """A key of `account` (extra: CLI flags such as --rpm 2)."""
    return cli("keys", "create", "--name", "k", "--account", account, "--database-url", database_url,
               *extra).stdout.strip()


@dataclass
class Server:
    base_url: str
    database_url: str
    key: str
    process: subprocess.Popen

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def post(self, path: str, body: object, key: str | None = None, timeout: float = 120) -> httpx.Response:
        """POST JSON to a route (e.g. "/v1/embeddings") with this server's key or another one."""
        return httpx.post(f"{self.base_url}{path}", headers=self.auth(key), json=body, timeout=timeout)

    def post_raw(self, path: str, content: bytes, timeout: float = 120) -> httpx.Response:
        """POST bytes as they are (bodies json.dumps cannot or should not make)."""
        return httpx.post(f"{self.base_url}{path}", content=content, timeout=timeout,
                          headers={**self.auth(), "Content-Type": "application/json"})

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


def start_server(tmp: Path, *extra: str, database_url: str | None = None, key: str | None = None) -> Server:
    database_url = database_url or f"sqlite:///{tmp / 'magistral.db'}"
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
    return Server(base_url, database_url, key or create_key(database_url), process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def fp32_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default model unquantized (fp32): its logprobs match a forward pass whatever the batch."""
    srv = start_server(tmp_path_factory.mktemp("fp32"), "--quantize", "none", "--no-embedding-model")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def mistral(server: Server):
    """The official mistralai SDK pointed at the shared server."""
    from mistralai.client import Mistral
    return Mistral(api_key=server.key, server_url=server.base_url)


@pytest.fixture(scope="session")
def openai_client(server: Server):
    """The official openai SDK pointed at the shared server."""
    from openai import OpenAI
    return OpenAI(api_key=server.key, base_url=f"{server.base_url}/v1")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


TINY_IMAGE = {"image_patch_size": 4, "max_image_size": 64, "spatial_merge_size": 2}


def make_mistral3_checkpoint(folder: Path) -> Path:
    """A tiny random Mistral 3 (text + vision) checkpoint in HF format with a v13 tekken.json:
    the shape of Magistral Small, small enough for CI."""
    import torch
    import transformers

    from magistral.chat.tekken import write_v13_tekken

    torch.manual_seed(0)
    text = transformers.MistralConfig(vocab_size=131072, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=16, max_position_embeddings=4096, rope_theta=1e9,
                                      sliding_window=None, tie_word_embeddings=False,
                                      initializer_range=0.3)  # peaked logits: greedy has no near-ties
    vision = transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, head_dim=8, patch_size=4,
                                              image_size=64, hidden_act="silu", initializer_range=0.3)
    config = transformers.Mistral3Config(vision_config=vision, text_config=text, image_token_index=10,
                                         spatial_merge_size=2, tie_word_embeddings=False)
    model = transformers.Mistral3ForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    write_v13_tekken(folder / "tekken.json", image=TINY_IMAGE)
    return folder


@pytest.fixture(scope="session")
def mistral3_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mistral3_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-mistral3")


@pytest.fixture(scope="session")
def vision_server(mistral3_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny random Mistral 3 (vision) checkpoint served as model "tiny-mistral3"."""
    srv = start_server(tmp_path_factory.mktemp("vision-server"), "--model", str(mistral3_checkpoint))
    yield srv
    stop_server(srv)
