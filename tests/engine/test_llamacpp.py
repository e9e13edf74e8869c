"""The llama.cpp engine (optional: pip install 'magistral[llamacpp]') behind the same API:
completions with logprobs and echo agree with a forward pass of our own model on the same GGUF."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import torch

from magistral.chat.tokenizer import GGUFTokenizer
from magistral.model.load import LoadedModel
from tests.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="needs llama-cpp-python (pip install 'magistral[llamacpp]')")
MODEL = "magistral-medium-latest"


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("llamacpp"), "--engine", "llamacpp", "--no-embedding-model")
    yield srv
    stop_server(srv)


def test_echo_logprobs_match_our_forward_pass(llamacpp_server: Server, loaded: LoadedModel,
                                              tokenizer: GGUFTokenizer) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. The capital of France is"
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": 2}
    choice = llamacpp_server.post("/v1/completions", body).json()["choices"][0]
    logprobs = choice["logprobs"]
    ids = tokenizer.encode(prompt)
    assert choice["text"].startswith(prompt) and len(logprobs["tokens"]) == len(ids) + 3
    assert logprobs["token_logprobs"][0] is None
    with torch.no_grad():
        reference = torch.log_softmax(loaded.model(torch.tensor([ids]))[0].float(), dim=-1)
    expected = [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]
    got = logprobs["token_logprobs"][1:len(ids)]
    # llama.cpp multiplies Q4_1 weights by 8-bit-quantized activations; our reference is fp32
    differences = [abs(a - b) for a, b in zip(got, expected, strict=True)]
    assert max(differences) < 0.3 and sum(differences) / len(differences) < 0.08
    generated = zip(logprobs["token_logprobs"][len(ids):], logprobs["top_logprobs"][len(ids):], strict=True)
    for lp, top in generated:
        assert lp == pytest.approx(max(top.values()), abs=1e-5)  # greedy picks the most likely token
    assert "Paris" in choice["text"][len(prompt):]


def test_scoring_only_and_generation_after_scoring(llamacpp_server: Server) -> None:
    prompts = ["Hello there", "Hello there, general"]
    body = {"model": MODEL, "prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 0}
    choices = llamacpp_server.post("/v1/completions", body).json()["choices"]
    first, second = (c["logprobs"]["token_logprobs"] for c in choices)
    assert len(first) == 2 and second[:2] == pytest.approx(first, abs=1e-5)  # same prefix, same numbers
    plain = llamacpp_server.post("/v1/completions", {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 4,
                                                     "temperature": 0}).json()["choices"][0]["text"]
    scored = llamacpp_server.post("/v1/completions", {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 4,
                                                      "temperature": 0, "echo": True, "logprobs": 1}).json()
    assert scored["choices"][0]["text"] == "1, 2, 3," + plain


def test_sampling_options_act_in_llama_cpp(llamacpp_server: Server, tokenizer: GGUFTokenizer) -> None:
    def complete(**extra) -> str:
        body = {"model": MODEL, "prompt": "My favourite fruit is", "max_tokens": 3, **extra}
        response = llamacpp_server.post("/v1/completions", body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    greedy = complete(temperature=0)
    assert complete(temperature=1.0, top_k=1, seed=3) == greedy
    [banana] = tokenizer.encode(" banana")
    assert complete(temperature=0, max_tokens=1, logit_bias={str(banana): 100}) == " banana"


def test_llama_cpp_calls_and_json_follow_the_grammar(llamacpp_server: Server) -> None:
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}
    tools = [{"type": "function", "function": {"name": "add", "parameters": schema}}]
    called = llamacpp_server.post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "What is 2 plus 3?"}], "tools": tools,
        "tool_choice": "required", "temperature": 0}).json()["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    for call in called["message"]["tool_calls"]:
        assert call["function"]["name"] == "add"
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    answer = llamacpp_server.post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "Two numbers a and b, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "pair", "schema": schema}},
        "temperature": 0, "max_tokens": 100}).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    jsonschema.validate(json.loads(answer["message"]["content"]), schema)


def test_llamacpp_serves_the_gguf_and_ours_serves_magistral_mini(llamacpp_server: Server) -> None:
    """`serve --engine llamacpp` alone: the shipped magistral-mini is a checkpoint folder that
    llama.cpp cannot load, so our engine serves it beside the GGUF (it once refused to start)."""
    import httpx

    models = httpx.get(f"{llamacpp_server.base_url}/v1/models", headers=llamacpp_server.auth()).json()
    names = {m["id"] for m in models["data"]}
    assert {"magistral-mini", "smollm2-135m-instruct"} <= names
    body = {"model": "magistral-mini", "messages": [{"role": "user", "content": "How many bars?"}],
            "max_tokens": 4, "temperature": 0}
    assert llamacpp_server.post("/v1/chat/completions", body).status_code == 200
