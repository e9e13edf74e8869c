"""A tiny random Mistral 3 checkpoint served end to end: images in, greedy output equal to
transformers' generate; image URLs guarded against SSRF. All traffic stays on loopback."""

from __future__ import annotations

import base64
import http.server
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from magistral.chat.mistral_prompt import MistralPrompter
from tests.conftest import Server, start_server

transformers = pytest.importorskip("transformers")
MODEL = "tiny-mistral3"
MAX_TOKENS = 12


def png_bytes(width: int = 20, height: int = 12) -> bytes:
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class ImageServer:
    """A loopback HTTP server: /cat.png, and /redirect → another loopback server's /cat.png."""

    def __init__(self, redirect_to: str | None = None):
        body = png_bytes()
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hits += 1
                if self.path == "/cat.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/redirect" and redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def image_servers() -> Iterator[tuple[ImageServer, ImageServer]]:
    target = ImageServer()
    redirector = ImageServer(redirect_to=f"http://127.0.0.1:{target.port}/cat.png")
    yield target, redirector
    target.httpd.shutdown()
    redirector.httpd.shutdown()


def stop(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=20)


def consolidated_copy(checkpoint: Path, folder: Path) -> Path:
    """The same weights in Mistral's own format (params.json + consolidated.safetensors)."""
    from magistral.model.checkpoints import load_hf, save_consolidated
    save_consolidated(load_hf(checkpoint)[0], folder)
    shutil.copy(checkpoint / "tekken.json", folder / "tekken.json")
    return folder


@pytest.fixture(scope="module")
def open_server(mistral3_checkpoint: Path, tmp_path_factory) -> Iterator[Server]:
    """Operator allowed private image hosts (on-premise use). Serves two models: the HF
    checkpoint and its consolidated conversion."""
    tmp = tmp_path_factory.mktemp("vision-open")
    consolidated = consolidated_copy(mistral3_checkpoint, tmp / "tiny-mistral3-consolidated")
    server = start_server(tmp, "--model", str(mistral3_checkpoint), "--model", str(consolidated),
                          "--allow-private-image-hosts")
    yield server
    stop(server)


@pytest.fixture(scope="module")
def guarded_server(vision_server: Server) -> Server:
    return vision_server  # the default image policy


@pytest.fixture(scope="module")
def reference_answer(mistral3_checkpoint: Path) -> tuple[int, str, int]:
    """(prompt tokens, text, completion tokens) of transformers' greedy generate on our prompt."""
    prompter = MistralPrompter(mistral3_checkpoint / "tekken.json")
    image = Image.open(io.BytesIO(png_bytes()))
    prompt = prompter.encode([{"role": "user", "content": [{"type": "text", "text": "Describe this."},
                                                           {"type": "image", "image": image}]}],
                             reasoning_prompt=False)
    model = transformers.Mistral3ForConditionalGeneration.from_pretrained(mistral3_checkpoint).eval()
    pixels = prompt.images[0]
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt.ids]), pixel_values=pixels[None],
                             image_sizes=torch.tensor([list(pixels.shape[1:])]), do_sample=False,
                             max_new_tokens=MAX_TOKENS, eos_token_id=2, pad_token_id=11)
    new = out[0, len(prompt.ids):].tolist()
    if 2 in new:
        new = new[:new.index(2)]
    assert len(new) >= 4 and prompter.tokenizer.decode(new).strip()  # a real, non-empty answer to compare
    return len(prompt.ids), prompter.tokenizer.decode(new), len(new)


def ask(server: Server, image_url: str, model: str = MODEL):
    from mistralai.client import Mistral
    client = Mistral(api_key=server.key, server_url=server.base_url)
    return client.chat.complete(model=model, temperature=0, max_tokens=MAX_TOKENS, prompt_mode=None,
                                messages=[{"role": "user", "content": [
                                    {"type": "text", "text": "Describe this."},
                                    {"type": "image_url", "image_url": image_url}]}])


def test_model_card_is_truthful(open_server: Server) -> None:
    from mistralai.client import Mistral
    card = Mistral(api_key=open_server.key, server_url=open_server.base_url).models.retrieve(model_id=MODEL)
    assert card.capabilities.vision and card.capabilities.reasoning
    assert card.max_context_length == 4096
    models = Mistral(api_key=open_server.key, server_url=open_server.base_url).models.list().data
    assert sorted(m.id for m in models) == ["all-minilm-l6-v2", MODEL, f"{MODEL}-consolidated"]


def test_base64_image_greedy_equals_transformers(open_server: Server, reference_answer) -> None:
    prompt_tokens, text, completion_tokens = reference_answer
    data = base64.b64encode(png_bytes()).decode()
    response = ask(open_server, f"data:image/png;base64,{data}")
    assert response.usage.prompt_tokens == prompt_tokens  # image tokens included
    assert response.usage.completion_tokens == completion_tokens
    assert response.choices[0].message.content == text
    consolidated = ask(open_server, f"data:image/png;base64,{data}", model=f"{MODEL}-consolidated")
    assert consolidated.choices[0].message.content == text


def test_identical_image_requests_at_once_all_answer(open_server: Server, reference_answer) -> None:
    """Regression: two running sequences with equal prompts were compared field by field,
    image tensors included, which raised in the engine thread and hung the server."""
    prompt_tokens, text, _ = reference_answer
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(ask(open_server, url))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [a.choices[0].message.content for a in answers] == [text] * 4
    assert httpx.get(f"{open_server.base_url}/health", timeout=10).status_code == 200


def test_http_image_from_an_allowed_local_server(open_server: Server, image_servers,
                                                 reference_answer) -> None:
    target, redirector = image_servers
    _, text, _ = reference_answer
    assert ask(open_server, f"http://127.0.0.1:{target.port}/cat.png").choices[0].message.content == text
    redirected = ask(open_server, f"http://127.0.0.1:{redirector.port}/redirect")
    assert redirected.choices[0].message.content == text


def post_image(server: Server, url: str) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {server.key}"})


def test_loopback_and_file_urls_are_refused_by_default(guarded_server: Server, image_servers) -> None:
    target, redirector = image_servers
    for url in (f"http://127.0.0.1:{target.port}/cat.png", f"http://localhost:{target.port}/cat.png",
                f"http://[::1]:{target.port}/cat.png", f"http://127.0.0.1:{redirector.port}/redirect",
                "file:///etc/passwd"):
        response = post_image(guarded_server, url)
        assert response.status_code == 400, (url, response.text)
        body = response.json()
        assert body["type"] == "invalid_request_error" and "image" in body["message"].lower()
    data = base64.b64encode(png_bytes()).decode()
    assert post_image(guarded_server, f"data:image/png;base64,{data}").status_code == 200


def test_bad_images_are_4xx(open_server: Server) -> None:
    assert post_image(open_server, "data:image/png;base64,bm90IGFuIGltYWdl").status_code == 400
    for url in ("http://example.test:99999/cat.png", "http://[::1/cat.png", "http://host:port/x"):
        response = post_image(open_server, url)  # refused while parsing: nothing is resolved or fetched
        assert response.status_code == 400 and "malformed" in response.json()["message"], url
    big = Image.new("RGB", (10001, 2))
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    response = post_image(open_server, f"data:image/png;base64,{encoded}")
    assert response.status_code == 400 and "10001x2" in response.json()["message"]
    many = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()}
    ] * 9}]}
    response = httpx.post(f"{open_server.base_url}/v1/chat/completions", json=many, timeout=60,
                          headers={"Authorization": f"Bearer {open_server.key}"})
    assert response.status_code == 400 and "limit is 8" in response.json()["message"]


def test_admission_comes_before_any_image_is_fetched(open_server: Server, image_servers) -> None:
    """A key at its limit gets its 429 without the server fetching or decoding anything, and a
    request refused after admission (a broken image) is billed nothing."""
    from tests.conftest import new_account, new_key

    account = new_account(open_server.database_url)
    key = new_key(open_server.database_url, account, "--rpm", "1")
    target, _ = image_servers
    text = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    assert open_server.post("/v1/chat/completions", text, key=key).status_code == 200
    hits = target.hits
    with_image = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": f"http://127.0.0.1:{target.port}/cat.png"}]}]}
    refused = open_server.post("/v1/chat/completions", with_image, key=key)
    assert refused.status_code == 429 and target.hits == hits

    fresh = new_key(open_server.database_url, new_account(open_server.database_url))
    broken = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}]}]}
    assert open_server.post("/v1/chat/completions", broken, key=fresh).status_code == 400
    fine = open_server.post("/v1/chat/completions", with_image, key=fresh)
    assert fine.status_code == 200, fine.text
    usage = httpx.get(f"{open_server.base_url}/v1/usage", params={"group_by": "model"},
                      headers=open_server.auth(fresh), timeout=30).json()["data"]
    billed = fine.json()["usage"]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in usage] == \
        [(billed["prompt_tokens"], billed["completion_tokens"])]
