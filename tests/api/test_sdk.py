"""The official mistralai and openai SDKs against the real server and the real default model."""

from __future__ import annotations

MODEL = "magistral-medium-latest"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_mistral_chat_complete(mistral) -> None:
    response = mistral.chat.complete(model=MODEL, messages=QUESTION, temperature=0, max_tokens=30)
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.model == "smollm2-135m-instruct" and len(response.id) == 32
    usage = response.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_mistral_chat_stream(mistral) -> None:
    events = list(mistral.chat.stream(model=MODEL, messages=QUESTION, temperature=0, max_tokens=30))
    first = events[0].data.choices[0].delta
    assert first.role == "assistant" and first.content == ""
    text = "".join(e.data.choices[0].delta.content or "" for e in events)
    assert "Paris" in text
    assert all(e.data.usage is None for e in events[:-1])
    last = events[-1].data
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 10


def test_mistral_same_seed_same_answer(mistral) -> None:
    def ask() -> str:
        r = mistral.chat.complete(model=MODEL, messages=[{"role": "user", "content": "Tell a joke."}],
                                  temperature=1.0, random_seed=42, max_tokens=20)
        return r.choices[0].message.content
    assert ask() == ask()


def test_mistral_models(mistral) -> None:
    models = mistral.models.list().data
    assert [m.id for m in models] == ["smollm2-135m-instruct", "magistral-mini", "all-minilm-l6-v2"]
    card = mistral.models.retrieve(model_id=MODEL)
    assert card.id == "smollm2-135m-instruct" and card.max_context_length == 8192
    assert card.capabilities.completion_chat and not card.capabilities.vision
    assert MODEL in card.aliases


def test_openai_chat_completions(openai_client) -> None:
    response = openai_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0,
                                                     max_completion_tokens=30, seed=3)
    assert "Paris" in response.choices[0].message.content
    assert response.usage.prompt_tokens > 10 and response.usage.completion_tokens > 0


def test_openai_streaming(openai_client) -> None:
    stream = openai_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0,
                                                   max_tokens=30, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
