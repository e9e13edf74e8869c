"""A short SFT run (the smoke version of `magistral train sft`): the loss falls, a resumed run
continues where it stopped, and the exported checkpoint serves images through the API."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import httpx

from magistral.train.sft import SFTConfig, train
from magistral.train.tasks.charts import example
from tests.conftest import start_server, stop_server


def test_the_loss_falls_and_a_run_resumes(sft_run: Path) -> None:
    run = sft_run
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 25))
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-4:]) / 4
    assert last < 0.6 * first, (first, last)  # from ~ln(3048) = 8.0 towards the trace format
    train(SFTConfig(out=run, steps=26, batch_size=4, warmup=4, lr=3e-3, eval_every=0, resume=True))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps[24:] == [25, 26]  # continued from the checkpoint, not from the start
    assert (run / "sft.png").stat().st_size > 10_000


def test_the_exported_checkpoint_serves_images(sft_run: Path, tmp_path: Path) -> None:
    from mistralai.client import Mistral

    server = start_server(tmp_path, "--model", str(sft_run / "model"), "--no-embedding-model")
    try:
        client = Mistral(api_key=server.key, server_url=server.base_url)
        models = httpx.get(f"{server.base_url}/v1/models", headers=server.auth(), timeout=30).json()["data"]
        card = next(m for m in models if m["id"] == "model")
        assert card["capabilities"]["vision"] and card["capabilities"]["reasoning"]
        buffer = io.BytesIO()
        ex = example(random.Random(1))
        ex.image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        response = client.chat.complete(model="model", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": url}, {"type": "text", "text": ex.question}]}])
        assert response.usage.prompt_tokens > 40 and response.choices[0].finish_reason in ("stop", "length")
    finally:
        stop_server(server)
