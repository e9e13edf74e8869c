"""What OpenAI-world clients send and expect: nulls, the `developer` role, an `error` object in
error bodies, chat logprobs, sampling controls that act (top_k, min_p, repetition_penalty,
logit_bias) or are refused, `<think>` text kept as text for non-reasoning models, CORS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from magistral.api.content import assistant_message
from magistral.chat.tokenizer import GGUFTokenizer
from tests.conftest import Server, start_server, stop_server

MODEL = "magistral-medium-latest"
HELLO = [{"role": "user", "content": "Name a fruit."}]


def chat(server: Server, **body) -> httpx.Response:
    return server.post("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 8, **body})


def test_errors_carry_an_openai_error_object(server: Server, openai_client) -> None:
    body = chat(server, model="nope").json()
    assert body["error"] == {k: body[k] for k in ("message", "type", "param", "code")}
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="nope", messages=HELLO)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "nope" in caught.value.body["message"]


def test_nulls_mean_defaults(server: Server) -> None:
    nulls = {name: None for name in ("top_p", "n", "presence_penalty", "frequency_penalty", "stream",
                                     "safe_prompt", "parallel_tool_calls", "top_k", "min_p",
                                     "repetition_penalty", "logit_bias", "logprobs", "temperature")}
    response = chat(server, **nulls)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_developer_role_is_the_system_role(server: Server) -> None:
    def ask(role: str) -> dict:
        messages = [{"role": role, "content": "Answer in French."}, *HELLO]
        return chat(server, temperature=0, messages=messages).json()

    as_developer, as_system = ask("developer"), ask("system")
    assert as_developer["usage"] == as_system["usage"]
    assert as_developer["choices"][0]["message"] == as_system["choices"][0]["message"]


def test_chat_logprobs_with_the_openai_sdk(openai_client) -> None:
    response = openai_client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=6,
                                                     logprobs=True, top_logprobs=2)
    choice = response.choices[0]
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert len(entries) == response.usage.completion_tokens or choice.finish_reason == "stop"
    for entry in entries:
        assert len(entry.top_logprobs) == 2 and entry.logprob <= 0
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-6)  # greedy
        assert bytes(entry.bytes).decode() == entry.token
    stream = openai_client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=6,
                                                   logprobs=True, stream=True)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in entries]


def text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_sampling_controls_act(server: Server, tokenizer: GGUFTokenizer) -> None:
    greedy = text(chat(server, temperature=0))
    assert text(chat(server, temperature=1.0, top_k=1, seed=5)) == greedy  # only the top token left
    assert text(chat(server, temperature=1.0, min_p=1.0, seed=6)) == greedy  # likewise
    banana = tokenizer.encode(" banana")
    assert len(banana) == 1
    biased = chat(server, temperature=0, max_tokens=1, logit_bias={str(banana[0]): 100}, logprobs=True).json()
    assert biased["choices"][0]["message"]["content"] == " banana"
    counting = [{"role": "user", "content": "Continue: 1, 2, 3, 4, 5,"}]
    plain = text(chat(server, temperature=0, messages=counting, max_tokens=12))
    penalized = text(chat(server, temperature=0, messages=counting, max_tokens=12, repetition_penalty=5.0))
    assert plain != penalized


@pytest.mark.parametrize("extra, param", [
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"99999999": 5}}, "logit_bias"),
])
def test_unsupported_or_inconsistent_options_are_refused(server: Server, extra: dict, param: str) -> None:
    response = chat(server, **extra)
    assert response.status_code == 400 and response.json()["param"] == param


@pytest.mark.parametrize("extra", [{"top_k": -1}, {"min_p": 2}, {"repetition_penalty": 0},
                                   {"logit_bias": {"5": 1000}}, {"top_logprobs": 50, "logprobs": True}])
def test_out_of_range_options_are_422(server: Server, extra: dict) -> None:
    response = chat(server, **extra)
    assert response.status_code == 422 and response.json()["object"] == "error"


def test_think_tags_are_text_for_a_model_that_does_not_reason(server: Server) -> None:
    assert assistant_message("<think>x</think>y", reasoning=False)["content"] == "<think>x</think>y"
    assert isinstance(assistant_message("<think>x</think>y", reasoning=True)["content"], list)
    card = httpx.get(f"{server.base_url}/v1/models/{MODEL}", headers=server.auth(), timeout=30).json()
    assert card["capabilities"]["reasoning"] is False
    prompt = [{"role": "user", "content": "Write the XML tag <think> three times."}]
    for stream in (False, True):
        response = server.post("/v1/chat/completions", {"model": MODEL, "messages": prompt, "max_tokens": 40,
                                                         "temperature": 0, "stream": stream})
        if stream:
            assert '"thinking"' not in response.text
        else:
            assert isinstance(response.json()["choices"][0]["message"]["content"], str)


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("cors"), "--cors-origin", "http://app.test",
                       "--no-embedding-model")
    yield srv
    stop_server(srv)


def test_cors_only_for_the_configured_origins(cors_server: Server, server: Server) -> None:
    preflight = {"Origin": "http://app.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(f"{cors_server.base_url}/v1/chat/completions", headers=preflight, timeout=30)
    assert allowed.headers["access-control-allow-origin"] == "http://app.test"
    answer = httpx.get(f"{cors_server.base_url}/v1/models", timeout=30,
                       headers={"Origin": "http://app.test", **cors_server.auth()})
    assert answer.headers["access-control-allow-origin"] == "http://app.test"
    other = httpx.options(f"{cors_server.base_url}/v1/chat/completions", timeout=30,
                          headers={**preflight, "Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in other.headers
    default = httpx.options(f"{server.base_url}/v1/chat/completions", headers=preflight, timeout=30)
    assert "access-control-allow-origin" not in default.headers


def test_n_choices_stream_with_both_sdks(openai_client, mistral, server: Server) -> None:
    events = list(openai_client.chat.completions.create(model=MODEL, messages=HELLO, n=3, max_tokens=6,
                                                        temperature=0.9, seed=11, stream=True))
    texts = ["", "", ""]
    for event in events:
        for choice in event.choices:
            texts[choice.index] += choice.delta.content or ""
    whole = openai_client.chat.completions.create(model=MODEL, messages=HELLO, n=3, max_tokens=6,
                                                  temperature=0.9, seed=11)
    assert texts == [c.message.content for c in whole.choices]  # seeded per choice: the same texts
    usage = [e.usage for e in events if e.usage]
    assert len(usage) == 1 and usage[0].completion_tokens == whole.usage.completion_tokens
    streamed = list(mistral.chat.stream(model=MODEL, messages=HELLO, n=2, max_tokens=4, temperature=0))
    assert sorted({c.index for e in streamed for c in e.data.choices}) == [0, 1]
    assert sum(1 for e in streamed for c in e.data.choices if c.finish_reason) == 2
