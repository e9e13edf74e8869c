"""vLLM's tokenizer routes, as lm-evaluation-harness's remote tokenizer backend calls them."""

from __future__ import annotations

import httpx

from magistral.chat.tokenizer import GGUFTokenizer
from tests.conftest import Server


def test_tokenizer_routes_round_trip(server: Server, tokenizer: GGUFTokenizer) -> None:
    info = httpx.get(f"{server.base_url}/tokenizer_info", headers=server.auth(), timeout=30).json()
    assert info["eos_token"] == "<|im_end|>" and info["model_max_length"] == 8192
    assert "<|im_start|>" in info["chat_template"]
    text = "Question: What is 2 + 2?\nAnswer: 4"
    tokens = server.post("/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert tokens["tokens"] == tokenizer.encode(text) and tokens["count"] == len(tokens["tokens"])
    back = server.post("/detokenize", {"tokens": tokens["tokens"]}).json()
    assert back["prompt"] == text
    named = server.post("/tokenize", {"model": "magistral-medium-latest", "prompt": "<|im_end|>"}).json()
    assert named["tokens"] == [tokenizer.eos_id]


def test_tokenizer_routes_need_a_key_and_valid_input(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/tokenizer_info", timeout=30).status_code == 401
    assert server.post("/detokenize", {"tokens": [10**9]}).status_code == 400
    assert server.post("/tokenize", {"prompt": 5}).status_code == 422
    assert server.post("/tokenize", {"prompt": "x", "model": "nope"}).status_code == 404
