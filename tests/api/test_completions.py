"""/v1/completions through the real server: the official openai SDK (plain, streamed, echo with
logprobs), logprobs equal to a direct forward pass of the same fp32 model, several prompts and
n, lm-evaluation-harness's request shape, and bad input."""

from __future__ import annotations

import pytest
import torch

from magistral.chat.tokenizer import GGUFTokenizer
from magistral.model.load import LoadedModel
from tests.conftest import Server

MODEL = "magistral-medium-latest"
PROMPT = "The capital of France is"


def test_openai_completions_create(openai_client) -> None:
    response = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    choice = response.choices[0]
    assert "Paris" in choice.text and choice.finish_reason in ("stop", "length")
    assert response.object == "text_completion" and response.model == "smollm2-135m-instruct"
    assert response.usage.prompt_tokens == 5 and 0 < response.usage.completion_tokens <= 8


def test_openai_completions_stream(openai_client) -> None:
    chunks = list(openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                                                   stream=True))
    text = "".join(c.choices[0].text for c in chunks)
    whole = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert text == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_echo_with_logprobs_gives_every_prompt_token(openai_client) -> None:
    response = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0,
                                                echo=True, logprobs=3)
    choice = response.choices[0]
    logprobs = choice.logprobs
    assert choice.text.startswith(PROMPT)
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.tokens) == 5 + 3 and logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert logprobs.text_offset[:2] == [0, len(logprobs.tokens[0])]
    for token, lp, top in zip(logprobs.tokens[1:], logprobs.token_logprobs[1:], logprobs.top_logprobs[1:],
                              strict=True):
        assert len(top) == 3 and max(top.values()) >= lp - 1e-6
        if token in top:
            assert top[token] == pytest.approx(lp, abs=1e-6)
    # greedy: each generated token is the most likely one
    for lp, top in zip(logprobs.token_logprobs[5:], logprobs.top_logprobs[5:], strict=True):
        assert lp == pytest.approx(max(top.values()), abs=1e-6)


def test_logprobs_equal_a_forward_pass(fp32_server: Server, loaded: LoadedModel,
                                      tokenizer: GGUFTokenizer) -> None:
    prompts = ["The quick brown fox jumps over the lazy dog.", "1, 2, 3, 4, 5, 6,"]
    body = {"model": MODEL, "prompt": prompts, "max_tokens": 4, "temperature": 0, "echo": True,
            "logprobs": 2}
    response = fp32_server.post("/v1/completions", body).json()
    model = loaded.model
    for prompt, choice in zip(prompts, response["choices"], strict=True):
        ids = tokenizer.encode(prompt)
        generated = [tokenizer.encode(t)[0] for t in choice["logprobs"]["tokens"][len(ids):]]
        full = ids + generated
        assert tokenizer.decode(full) == choice["text"]  # the token strings map back to these ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([full]))[0].float(), dim=-1)
        expected = [logprobs[i - 1, full[i]].item() for i in range(1, len(full))]
        got = choice["logprobs"]["token_logprobs"][1:]
        assert len(got) == len(expected) == len(full) - 1
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-4
        assert generated == [int(logprobs[i - 1].argmax()) for i in range(len(ids), len(full))]


def test_several_prompts_and_n(server: Server) -> None:
    body = {"model": MODEL, "prompt": ["Hello", "Paris is"], "n": 2, "max_tokens": 4, "temperature": 0.9,
            "seed": 7}
    response = server.post("/v1/completions", body).json()
    assert [c["index"] for c in response["choices"]] == [0, 1, 2, 3]
    usage = response["usage"]
    assert usage["prompt_tokens"] == 1 + 2  # "Hello" and "Paris is", each counted once
    assert 4 <= usage["completion_tokens"] <= 4 * 4
    assert all(c["finish_reason"] in ("stop", "length") for c in response["choices"])
    again = server.post("/v1/completions", body).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in response["choices"]]  # seeded


def test_token_id_prompts_like_lm_evaluation_harness(server: Server, tokenizer: GGUFTokenizer) -> None:
    """lm-eval's local-completions sends token ids, max_tokens 1, echo and logprobs 1, and reads
    token_logprobs[ctxlen:-1]."""
    context, continuation = tokenizer.encode("Question: What is 2 + 2?\nAnswer:"), tokenizer.encode(" 4")
    body = {"model": MODEL, "prompt": [context + continuation], "max_tokens": 1, "temperature": 0,
            "logprobs": 1, "echo": True, "seed": 1234}
    choice = server.post("/v1/completions", body).json()["choices"][0]
    token_logprobs = choice["logprobs"]["token_logprobs"][len(context):-1]
    top = choice["logprobs"]["top_logprobs"][len(context):-1]
    assert len(token_logprobs) == len(continuation) and all(lp < 0 for lp in token_logprobs)
    assert all(len(t) == 1 for t in top)


@pytest.mark.parametrize("body, status, fragment", [
    ({"prompt": ""}, 400, "empty"),
    ({"prompt": []}, 400, "empty"),
    ({"prompt": ["a"] * 65}, 400, "limit"),
    ({"prompt": [[-1, 5]]}, 400, "vocabulary"),
    ({"prompt": "hi", "max_tokens": "lots"}, 422, "max_tokens"),
    ({"prompt": {"text": "hi"}}, 422, "prompt"),
    ({"prompt": "x " * 9000}, 400, "maximum context length"),
    ({"prompt": "hi", "logprobs": 50}, 422, "logprobs"),
    ({"prompt": "hi", "suffix": "there"}, 400, "fill-in-the-middle"),
    ({"prompt": "hi", "best_of": 3}, 400, "best_of"),
    ({"prompt": "hi", "model": "all-minilm-l6-v2"}, 400, "embeddings"),
    ({"prompt": "hi", "model": "nope"}, 404, "not found"),
])
def test_bad_input_gets_an_error_in_the_api_shape(server: Server, body: dict, status: int,
                                                  fragment: str) -> None:
    response = server.post("/v1/completions", {"model": MODEL, **body})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["object"] == "error" and fragment in error["message"]


def test_nulls_from_sdks_mean_defaults(server: Server) -> None:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "n": None, "top_p": None, "stream": None,
            "echo": None, "presence_penalty": None, "temperature": None}
    assert server.post("/v1/completions", body).status_code == 200


def test_several_prompts_stream_interleaved_by_index(openai_client) -> None:
    prompts = ["1, 2, 3,", "The capital of France is"]
    whole = openai_client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=5, temperature=0)
    chunks = list(openai_client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=5,
                                                   temperature=0, stream=True))
    texts, finishes = ["", "", "", ""], [None] * 4
    for c in chunks:
        choice = c.choices[0]
        texts[choice.index] += choice.text
        finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [c.text for c in whole.choices]  # greedy: the same four texts either way
    assert finishes == [c.finish_reason for c in whole.choices]
    with_usage = [c for c in chunks if c.usage]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert with_usage[0].usage.completion_tokens == whole.usage.completion_tokens
