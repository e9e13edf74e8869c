"""Checkpoints as published: a text-only model that ships its family's image-capable tokenizer
serves text, and refuses images with a clear 400."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import TINY_IMAGE, start_server, stop_server


def make_text_only_checkpoint(folder: Path) -> Path:
    import torch
    import transformers

    from magistral.chat.tekken import write_v13_tekken

    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=1000 + 1024, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=16, max_position_embeddings=4096, tie_word_embeddings=False)
    transformers.MistralForCausalLM(config).save_pretrained(folder)
    write_v13_tekken(folder / "tekken.json", image=TINY_IMAGE, ranks=1024)  # the family's tokenizer
    return folder


def test_text_only_checkpoint_with_an_image_tokenizer_serves_text(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = make_text_only_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-text")
    server = start_server(tmp_path_factory.mktemp("text-only"), "--model", str(folder),
                          "--no-embedding-model")
    try:
        models = httpx.get(f"{server.base_url}/v1/models", headers=server.auth(), timeout=30).json()["data"]
        card = next(m for m in models if m["id"] == "tiny-text")
        assert card["capabilities"]["vision"] is False
        text = server.post("/v1/chat/completions", {"model": "tiny-text", "max_tokens": 4,
                                                    "messages": [{"role": "user", "content": "Hi"}]})
        assert text.status_code == 200, text.text
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": url}]
        image = server.post("/v1/chat/completions", {"model": "tiny-text",
                                                     "messages": [{"role": "user", "content": content}]})
        assert image.status_code == 400 and "image" in image.json()["message"].lower()
    finally:
        stop_server(server)
