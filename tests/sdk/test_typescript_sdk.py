"""The TypeScript SDK (clients/typescript, built into dist/ by setup.sh) through Node's own test
runner: its test files against the real server, the vision + reasoning checkpoint, and a loopback
endpoint that plays the error scripts the requests carry; then its examples."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Server, new_account, new_key
from tests.loopback import LoopbackEndpoint, completion

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
VISION_MODEL = "tiny-mistral3"


class ScriptedEndpoint(LoopbackEndpoint):
    """Plays the script a request carries: `script` names it, `answers` lists [status, headers,
    delay in seconds]; the n-th request of a script gets the n-th answer, then 200 with a
    completion (thinking "hmm", text "Hello!"). Every body says which attempt it answered."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        super().__init__(self.respond)

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        name, answers = body["script"], body.get("answers", [])
        attempt = self.attempts[name]
        self.attempts[name] += 1
        status, headers, delay = answers[attempt] if attempt < len(answers) else (200, {}, 0)
        time.sleep(delay)
        if status == 200:
            answer = completion(body["model"], [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "Hello!"}])
        else:
            answer = {"object": "error", "message": f"scripted {status}", "type": "scripted",
                      "param": None, "code": str(status)}
        return status, headers, {**answer, "attempt": attempt + 1}


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed")
    if not (SDK / "dist" / "index.js").exists():
        pytest.fail("clients/typescript/dist is missing: run ./setup.sh (npm ci && npm run build there)")
    return found


def run_node(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run([node(), *args], cwd=SDK, env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=500)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {' '.join(args)} timed out:\n{exc.stdout}\n{exc.stderr}")
    assert result.returncode == 0, f"node {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def node_test(name: str, **env: str) -> None:
    """One test file; each of its tests may take 200 s (the first requests of a cold server are slow)."""
    run_node("--test", "--test-reporter=spec", "--test-timeout=200000", f"test/{name}.test.mjs", **env)


def server_env(server: Server) -> dict[str, str]:
    return {"MAGISTRAL_BASE_URL": server.base_url, "MAGISTRAL_API_KEY": server.key}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pictures")
    picture = Image.new("RGB", (40, 24), (200, 30, 30))
    picture.save(folder / "red.png")
    picture.save(folder / "red.jpg", format="JPEG")
    return {"MAGISTRAL_TEST_PNG": str(folder / "red.png"), "MAGISTRAL_TEST_JPEG": str(folder / "red.jpg")}


@pytest.fixture
def scripted() -> Iterator[ScriptedEndpoint]:
    endpoint = ScriptedEndpoint()
    yield endpoint
    endpoint.close()


def test_chat_models_tools_and_aborts_against_the_server(server: Server) -> None:
    node_test("chat", **server_env(server))


def test_usage_invoice_and_account_of_a_fresh_account(server: Server) -> None:
    account = new_account(server.database_url)
    key = new_key(server.database_url, account)
    node_test("usage", MAGISTRAL_BASE_URL=server.base_url, MAGISTRAL_API_KEY=key, MAGISTRAL_ACCOUNT=account)


def test_retries_timeouts_and_typed_errors_against_scripted_answers(scripted: ScriptedEndpoint) -> None:
    node_test("errors", MAGISTRAL_SCRIPTED_URL=scripted.url)
    assert scripted.attempts and max(scripted.attempts.values()) == 3  # the retries reached the endpoint


def test_image_helpers_retry_delays_and_sse_framing(pictures: dict[str, str]) -> None:
    node_test("helpers", **pictures)


def test_complete_and_stream_examples_run(server: Server) -> None:
    complete = run_node("examples/complete.mjs", **server_env(server)).stdout
    answer, usage = complete.rsplit("usage: ", 1)
    assert answer.strip() and json.loads(usage)["completion_tokens"] > 0
    streamed = run_node("examples/stream.mjs", **server_env(server)).stdout
    assert streamed.split("[end: ")[0].strip() and "tokens]" in streamed


def test_image_example_runs(vision_server: Server, pictures: dict[str, str]) -> None:
    image = run_node("examples/image.mjs", pictures["MAGISTRAL_TEST_PNG"], **server_env(vision_server),
                     MAGISTRAL_MODEL=VISION_MODEL).stdout
    assert int(image.split("prompt tokens: ")[1].split()[0]) > 20  # the picture's tokens were counted


def test_images_and_thinking_against_the_vision_reasoning_checkpoint(vision_server: Server,
                                                                      pictures: dict[str, str]) -> None:
    from magistral.chat.tekken import V13_EXTRA

    think = next(rank for rank, name in V13_EXTRA.items() if name == "[THINK]")
    node_test("vision", **server_env(vision_server), **pictures, MAGISTRAL_MODEL=VISION_MODEL,
              MAGISTRAL_THINK_TOKEN=str(think))
