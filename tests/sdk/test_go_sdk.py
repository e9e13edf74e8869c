"""The Go SDK (clients/go) through `go test`: its tests against the real server, the vision +
reasoning checkpoint, and loopback endpoints whose errors we script; then its examples. Go
builds with the standard library only (GOPROXY=off: nothing is downloaded)."""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import Server
from tests.loopback import LoopbackEndpoint, completion

SDK = Path(__file__).resolve().parents[2] / "clients" / "go"
MODEL = "magistral-medium-latest"
VISION_MODEL = "tiny-mistral3"

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")


def go(*args: str, **env: str) -> str:
    """Run go in clients/go with `env` on top of ours (whose MAGISTRAL_* variables are dropped, so
    only what a test passes reaches the SDK) and return its output; fail showing it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAGISTRAL_")}
    if not (base.get("GOCACHE") or base.get("HOME") or base.get("XDG_CACHE_HOME")):
        base["GOCACHE"] = os.path.join(tempfile.gettempdir(), "magistral-go-build")  # never in the repo
    result = subprocess.run(["go", *args], cwd=SDK, capture_output=True, text=True, timeout=540,
                            env={**base, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "", **env})
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"go {' '.join(args)} failed ({result.returncode}):\n{output}"
    return output


def go_test(pattern: str, **env: str) -> str:
    """`go test` of the tests matching pattern; each must run (none skipped for want of env)."""
    output = go("test", "-count=1", "-v", "-run", pattern, "./...", **env)
    assert "--- PASS" in output and "--- SKIP" not in output, output
    return output


def test_go_sources_are_formatted_vetted_and_unit_tested() -> None:
    gofmt = subprocess.run(["gofmt", "-l", "."], cwd=SDK, capture_output=True, text=True, timeout=120)
    assert gofmt.returncode == 0 and gofmt.stdout == "", f"gofmt -l:\n{gofmt.stdout}{gofmt.stderr}"
    go("vet", "./...")
    output = go("test", "-count=1", "-v", "./...")  # no MAGISTRAL_* variables: the servers' tests skip
    assert "--- PASS: TestRetryAfterSecondsAndDates" in output and "--- SKIP: TestServerModels" in output
    assert "--- FAIL" not in output


def test_go_sdk_against_the_server(server: Server) -> None:
    eos = server.post("/tokenize", {"model": MODEL, "prompt": "<|im_end|>"}).json()["tokens"]
    assert len(eos) == 1
    output = go_test("^TestServer", MAGISTRAL_BASE_URL=server.base_url, MAGISTRAL_API_KEY=server.key,
                     MAGISTRAL_MODEL=MODEL, MAGISTRAL_TEST_EOS_TOKEN=str(eos[0]))
    assert "--- PASS: TestServerCancellingOrClosingAStreamStopsTheGeneration" in output
    assert server.wait_idle()["active_sequences"] == 0


def test_go_sdk_against_a_vision_reasoning_model(vision_server: Server) -> None:
    from magistral.chat.tekken import V13_EXTRA

    # [THINK] and [/THINK] both forced: the random model opens a thinking span, closes it and
    # writes [/THINK] as text, so the answer has both parts
    ranks = {name: rank for rank, name in V13_EXTRA.items()}
    bias = f'{{"{ranks["[THINK]"]}": 100, "{ranks["[/THINK]"]}": 100}}'
    go_test("^TestVision", MAGISTRAL_VISION_BASE_URL=vision_server.base_url,
            MAGISTRAL_VISION_API_KEY=vision_server.key, MAGISTRAL_VISION_MODEL=VISION_MODEL,
            MAGISTRAL_TEST_THINK_BIAS=bias)


Headers = dict[str, str] | Callable[[], dict[str, str]]


class ScriptedEndpoint(LoopbackEndpoint):
    """Answers POSTs with the scripted (status, headers) in turn, then 200 with a completion
    (thinking "hmm", text "Hello!"). Headers may be a function: a Retry-After date is made when
    the answer is, not when the test starts (go builds in between)."""

    def __init__(self, script: list[tuple[int, Headers]]):
        self.script, self.times = list(script), []
        super().__init__(self.respond)

    def respond(self, body: dict) -> tuple[int, dict[str, str], dict]:
        self.times.append(time.monotonic())
        status, headers = self.script.pop(0) if self.script else (200, {})
        headers = headers() if callable(headers) else headers
        if status == 200:
            return 200, headers, completion(body["model"], [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "Hello!"}])
        return status, headers, {"object": "error", "message": f"scripted {status}", "type": "scripted",
                                 "param": None, "code": str(status)}


@pytest.fixture
def endpoints() -> Iterator[dict[str, ScriptedEndpoint]]:
    def in_two_seconds() -> dict[str, str]:
        return {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}

    made = {"MAGISTRAL_TEST_RETRY_URL": ScriptedEndpoint([(429, {"Retry-After": "1"}), (503, {})]),
            "MAGISTRAL_TEST_RETRY_DATE_URL": ScriptedEndpoint([(503, in_two_seconds)]),
            "MAGISTRAL_TEST_BAD_REQUEST_URL": ScriptedEndpoint([(400, {})]),
            "MAGISTRAL_TEST_RATE_LIMIT_URL": ScriptedEndpoint([(429, {"Retry-After": "0"})] * 3),
            "MAGISTRAL_TEST_SLOW_RETRY_URL": ScriptedEndpoint([(429, {"Retry-After": "30"})] * 3)}
    yield made
    for endpoint in made.values():
        endpoint.close()


def test_go_sdk_retries_and_typed_errors(endpoints: dict[str, ScriptedEndpoint]) -> None:
    go_test("^(TestScripted|TestConnection)", **{name: e.url for name, e in endpoints.items()})
    retry = endpoints["MAGISTRAL_TEST_RETRY_URL"].times
    assert len(retry) == 3 and retry[1] - retry[0] >= 0.95  # waited as told, then retried the 503
    dated = endpoints["MAGISTRAL_TEST_RETRY_DATE_URL"].times
    assert len(dated) == 2 and dated[1] - dated[0] >= 0.9  # the date was 1 to 2 s ahead
    assert len(endpoints["MAGISTRAL_TEST_BAD_REQUEST_URL"].times) == 1  # a 400 is not retried
    assert len(endpoints["MAGISTRAL_TEST_RATE_LIMIT_URL"].times) == 2  # max retries 1
    assert len(endpoints["MAGISTRAL_TEST_SLOW_RETRY_URL"].times) == 1  # cancelled while waiting 30 s


TOKENS = re.compile(r"finish_reason: (\w+), tokens: (\d+) prompt.* \+ (\d+) completion")


def test_go_examples_complete_and_stream(server: Server) -> None:
    """The README's examples run against the default model."""
    env = {"MAGISTRAL_BASE_URL": server.base_url, "MAGISTRAL_API_KEY": server.key, "MAGISTRAL_MODEL": MODEL}
    completed = go("run", "./examples/complete", "Name a fruit.", **env)
    assert re.search(r"^answer: \S", completed, re.M) and TOKENS.search(completed), completed
    streamed = go("run", "./examples/stream", "Name a fruit.", **env)
    end = TOKENS.search(streamed)
    assert end and end.group(1) in ("stop", "length") and int(end.group(3)) > 0, streamed
    assert streamed[:end.start()].strip(), streamed  # the answer came before the end


def test_go_image_example(vision_server: Server, tmp_path: Path) -> None:
    """The image example sends a file to the vision model: its tokens count in the prompt."""
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 24), (200, 30, 30)).save(path)
    env = {"MAGISTRAL_BASE_URL": vision_server.base_url, "MAGISTRAL_API_KEY": vision_server.key,
           "MAGISTRAL_MODEL": VISION_MODEL}
    question = "What is in this picture?"
    text_only = go("run", "./examples/complete", question, **env)
    pictured = go("run", "./examples/image", str(path), question, **env)
    before, after = TOKENS.search(text_only), TOKENS.search(pictured)
    assert before and after and int(after.group(2)) >= int(before.group(2)) + 15, pictured
