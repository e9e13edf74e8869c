"""/v1/fim/completions: Mistral's SDK against a tekken checkpoint (mistral-common's FIM layout),
a clear 400 for a model without FIM tokens, capabilities that say which is which, and the
<fim_prefix>-style layout for GGUF tokenizers that have those tokens."""

from __future__ import annotations

import httpx
import pytest

from magistral.chat.prompt import TemplatePrompter
from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from tests.conftest import Server

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


def capabilities(server: Server, model: str) -> dict:
    card = httpx.get(f"{server.base_url}/v1/models/{model}", headers=server.auth(), timeout=30).json()
    return card["capabilities"]


def test_mistral_fim_complete_on_a_tekken_model(vision_server: Server) -> None:
    from mistralai.client import Mistral

    assert capabilities(vision_server, "tiny-mistral3")["completion_fim"] is True
    client = Mistral(api_key=vision_server.key, server_url=vision_server.base_url)
    response = client.fim.complete(model="tiny-mistral3", prompt=PREFIX, suffix=SUFFIX, max_tokens=6,
                                   temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    assert 0 < response.usage.completion_tokens <= 6
    # the prompt is mistral-common's: [BOS] [SUFFIX] suffix [PREFIX] prefix
    assert response.usage.prompt_tokens > len(PREFIX) // 8 + len(SUFFIX) // 8
    streamed = list(client.fim.stream(model="tiny-mistral3", prompt=PREFIX, suffix=SUFFIX, max_tokens=6,
                                      temperature=0))
    text = "".join(e.data.choices[0].delta.content or "" for e in streamed)
    assert text == choice.message.content  # greedy: the same tokens either way
    assert streamed[-1].data.usage.completion_tokens == response.usage.completion_tokens


def test_model_without_fim_tokens_gets_a_clear_400(server: Server) -> None:
    assert capabilities(server, "magistral-medium-latest")["completion_fim"] is False
    response = server.post("/v1/fim/completions", {"model": "magistral-medium-latest", "prompt": PREFIX,
                                                   "suffix": SUFFIX})
    assert response.status_code == 400
    error = response.json()
    assert error["object"] == "error" and error["param"] == "model"
    assert "fill-in-the-middle" in error["message"]


@pytest.mark.parametrize("body, status", [
    ({"prompt": 5}, 422), ({}, 422), ({"prompt": "x", "max_tokens": -1}, 422),
    ({"prompt": "x", "min_tokens": 3}, 400), ({"prompt": "x", "model": "nope"}, 404),
    ({"prompt": "x " * 5000}, 400),
])
def test_bad_fim_input(vision_server: Server, body: dict, status: int) -> None:
    response = vision_server.post("/v1/fim/completions", {"model": "tiny-mistral3", **body})
    assert response.status_code == status, response.text
    assert response.json()["object"] == "error"


def test_gguf_fim_tokens_make_a_prefix_suffix_middle_prompt(loaded) -> None:
    meta = dict(loaded.metadata)
    tokens = list(meta["tokenizer.ggml.tokens"])
    # SmolLM2 has no FIM tokens; name three unused special slots the StarCoder way
    tokens[3:6] = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]
    meta["tokenizer.ggml.tokens"] = tokens
    tokenizer = GGUFTokenizer(meta)
    assert tokenizer.fim_ids == (3, 5, 4)
    prompter = TemplatePrompter(ChatTemplate(meta["tokenizer.chat_template"], "", ""), tokenizer)
    ids = prompter.encode_fim("def f(", "):")
    assert ids == [3, *tokenizer.encode("def f("), 5, *tokenizer.encode("):"), 4]
    assert prompter.fim and not TemplatePrompter(prompter.template, GGUFTokenizer(loaded.metadata)).fim
