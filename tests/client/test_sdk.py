"""magistral's own SDK: sync and async clients against the real server, image helpers against a
vision model, retries and errors against loopback endpoints whose answers we script."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from magistral.client import APIStatusError, AsyncClient, Client, RateLimitError, image_url, user_message
from tests.conftest import Server
from tests.loopback import LoopbackEndpoint, completion

MODEL = "magistral-medium-latest"
HELLO = [{"role": "user", "content": "Say hello."}]


class ScriptedEndpoint(LoopbackEndpoint):
    """Answers POSTs with the scripted (status, headers) in turn, then 200 with a completion."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]):
        self.script, self.times = list(script), []
        super().__init__(self.respond)

    def respond(self, body: dict) -> tuple[int, dict[str, str], dict]:
        self.times.append(time.monotonic())
        status, headers = self.script.pop(0) if self.script else (200, {})
        if status == 200:
            return 200, headers, completion("m", [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "Hello!"}])
        return status, headers, {"object": "error", "message": f"scripted {status}", "type": "scripted",
                                 "param": None, "code": str(status)}


@pytest.fixture
def scripted() -> Iterator:
    servers: list[ScriptedEndpoint] = []

    def make(script: list[tuple[int, dict[str, str]]]) -> ScriptedEndpoint:
        servers.append(ScriptedEndpoint(script))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def test_429_is_retried_after_the_servers_retry_after(scripted) -> None:
    endpoint = scripted([(429, {"Retry-After": "1"}), (503, {})])
    with Client(endpoint.url, "k", max_retries=2) as client:
        response = client.chat.complete(model="m", messages=HELLO)
    assert len(endpoint.times) == 3
    assert endpoint.times[1] - endpoint.times[0] >= 0.95  # waited as told
    assert response.text == "Hello!" and response.thinking == "hmm" and response.usage["total_tokens"] == 5


def test_errors_carry_the_body_and_client_errors_are_not_retried(scripted) -> None:
    endpoint = scripted([(400, {})])
    with Client(endpoint.url, "k", max_retries=3) as client, pytest.raises(APIStatusError) as caught:
        client.chat.complete(model="m", messages=HELLO)
    assert len(endpoint.times) == 1
    assert caught.value.status_code == 400 and caught.value.body["message"] == "scripted 400"
    endpoint = scripted([(429, {"Retry-After": "0"})] * 3)
    with Client(endpoint.url, "k", max_retries=1) as client, pytest.raises(RateLimitError) as limited:
        client.chat.complete(model="m", messages=HELLO)
    assert len(endpoint.times) == 2 and limited.value.headers["retry-after"] == "0"


def test_sync_client_against_the_server(server: Server) -> None:
    with Client(server.base_url, server.key) as client:
        assert [m["id"] for m in client.models.list()] == ["smollm2-135m-instruct", "magistral-mini",
                                                           "all-minilm-l6-v2"]
        assert client.models.retrieve(MODEL)["id"] == "smollm2-135m-instruct"  # the alias resolves
        response = client.chat.complete(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
        events = list(client.chat.stream(model=MODEL, messages=HELLO, max_tokens=8, temperature=0))
    assert response.text and response.finish_reason in ("stop", "length")
    assert "".join(e.text for e in events if e.kind == "text") == response.text  # same greedy answer
    assert events[-1].kind == "end"
    assert events[-1].usage["completion_tokens"] == response.usage["completion_tokens"]
    with Client(server.base_url, "wrong-key") as client, pytest.raises(APIStatusError) as caught:
        client.chat.complete(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 401 and caught.value.message


def test_async_client_runs_requests_concurrently(server: Server) -> None:
    async def main() -> tuple[list, list]:
        async with AsyncClient(server.base_url, server.key) as client:
            questions = [[{"role": "user", "content": f"Name a {thing}."}]
                         for thing in ("fruit", "color", "dog")]
            answers = await asyncio.gather(*(client.chat.complete(model=MODEL, messages=q, max_tokens=6,
                                                                  temperature=0) for q in questions))
            streamed = [e async for e in client.chat.stream(model=MODEL, messages=questions[0], max_tokens=6,
                                                            temperature=0)]
            return answers, streamed
    answers, streamed = asyncio.run(main())
    assert all(a.text for a in answers)
    assert "".join(e.text for e in streamed if e.kind == "text") == answers[0].text


def test_images_from_a_path_bytes_and_pil_reach_a_vision_model(vision_server: Server, tmp_path: Path) -> None:
    picture = Image.new("RGB", (40, 24), (200, 30, 30))
    path = tmp_path / "red.png"
    picture.save(path)
    from_path, from_bytes = image_url(path), image_url(path.read_bytes())
    assert from_path == from_bytes and from_path.startswith("data:image/png;base64,")
    assert image_url("https://example.com/a.png") == "https://example.com/a.png"  # passed on, not fetched
    with Client(vision_server.base_url, vision_server.key) as client:
        answers = [client.chat.complete(model="tiny-mistral3", max_tokens=4, temperature=0,
                                        messages=[user_message("What is this?", image)])
                   for image in (path, picture)]
    assert answers[0].text == answers[1].text and answers[0].usage["prompt_tokens"] > 20  # image tokens
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG")
    assert image_url(buffer.getvalue()).startswith("data:image/jpeg;base64,")
