"""Console fixtures: an SMTP sink on loopback (aiosmtpd) that keeps what it receives, and the
API app with the console mounted in process (no model: the console needs none), driven over
https:// so that Secure cookies flow as they do in a browser."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from magistral.api.app import create_app
from magistral.console.settings import ConsoleSettings
from magistral.engine.registry import ModelRegistry
from magistral.platform.gateway import Platform
from magistral.platform.store import Store
from tests.conftest import free_port

PASSWORD = "correct horse battery staple"


@dataclass
class SmtpSink:
    """Mail received on 127.0.0.1:port, in order."""
    port: int
    messages: list[Message] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        with self.arrived:
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, to: str, subject: str, timeout: float = 30.0) -> Message:
        """The first mail to `to` whose subject contains `subject` (waiting for it to arrive)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for message in self.messages:
                    if message["To"] == to and subject in message["Subject"]:
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail to {to} about {subject!r}; got "
                                         f"{[(m['To'], m['Subject']) for m in self.messages]}")
                self.arrived.wait(left)

    def link(self, to: str, subject: str, path: str) -> str:
        body = self.wait_for(to, subject).get_payload(decode=True).decode()
        return re.search(rf"https?://\S+{re.escape(path)}#token=[\w-]+", body).group(0)


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    handler = SmtpSink(free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
def app_client(tmp_path: Path, sink: SmtpSink) -> Iterator[TestClient]:
    store = Store(f"sqlite:///{tmp_path / 'console.db'}")
    platform = Platform.create(store, replica="test")
    app = create_app(ModelRegistry([], []), platform, console=ConsoleSettings(smtp_url=sink.url))
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def token_of(client: TestClient) -> str:
    """The CSRF token the page would hold (signed in: the session's; else the double-submit one)."""
    return client.get("/console/api/session").json()["csrf_token"]


def post(client: TestClient, path: str, body: dict | None = None, **kwargs):
    return client.post("/console/api" + path, json=body or {}, headers={"X-CSRF-Token": token_of(client)},
                       **kwargs)


def sign_up(client: TestClient, sink: SmtpSink, email: str, account: str, verify: bool = True) -> None:
    made = post(client, "/signup", {"email": email, "password": PASSWORD, "account": account})
    assert made.status_code == 202, made.text
    if verify:
        token = sink.link(email, "confirm your address", "/console/verify").rsplit("=", 1)[1]
        assert post(client, "/verify", {"token": token}).status_code == 200


def sign_in(client: TestClient, email: str, password: str = PASSWORD):
    return post(client, "/login", {"email": email, "password": password})
