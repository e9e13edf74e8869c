"""magistral-mini, the shipped vision reasoner, through the API as a user meets it: served by
default with a card that says vision and reasoning; the official `mistralai` SDK streams its
thinking chunks, then the answer, for a chart sent as base64 and as a loopback URL (which the
operator allows with --allow-private-image-hosts)."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from magistral.train.ship import SHIPPED
from magistral.train.tasks.charts import example
from tests.api.test_vision import ImageServer
from tests.conftest import Server, start_server, stop_server

MODEL = "magistral-mini"


@pytest.fixture(scope="module")
def mini_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("mini"), "--no-embedding-model",
                          "--allow-private-image-hosts")
    yield server
    stop_server(server)


def test_served_by_default_with_a_truthful_card(server: Server) -> None:
    from mistralai.client import Mistral

    assert (SHIPPED / "consolidated.safetensors").stat().st_size < 50 * 2**20
    client = Mistral(api_key=server.key, server_url=server.base_url)
    assert MODEL in [m.id for m in client.models.list().data]
    card = client.models.retrieve(model_id=MODEL)
    assert card.capabilities.vision and card.capabilities.reasoning and card.capabilities.completion_chat


def stream(server: Server, image_url: str, question: str) -> tuple[list[str], str, str]:
    """(the kinds of the content pieces in order, the thinking text, the answer text)."""
    from mistralai.client import Mistral

    client = Mistral(api_key=server.key, server_url=server.base_url)
    kinds, thinking, answer, finish = [], "", "", None
    content = [{"type": "image_url", "image_url": image_url}, {"type": "text", "text": question}]
    events = client.chat.stream(model=MODEL, temperature=0, max_tokens=96,
                                messages=[{"role": "user", "content": content}])
    for event in events:
        choice = event.data.choices[0]
        finish = choice.finish_reason or finish
        delta = choice.delta.content
        pieces = delta if isinstance(delta, list) else ([delta] if delta else [])
        for piece in pieces:
            if isinstance(piece, str) or getattr(piece, "type", None) == "text":
                kinds.append("text")
                answer += piece if isinstance(piece, str) else piece.text
            elif getattr(piece, "type", None) == "thinking":
                kinds.append("thinking")
                thinking += "".join(t.text for t in piece.thinking)
    assert finish in ("stop", "length")
    return kinds, thinking, answer


def chart_png(seed: int) -> tuple[bytes, str]:
    ex = example(random.Random(seed))
    buffer = io.BytesIO()
    ex.image.save(buffer, format="PNG")
    return buffer.getvalue(), ex.question


def test_thinking_then_the_answer_for_a_base64_chart(mini_server: Server) -> None:
    png, question = chart_png(11)
    kinds, thinking, answer = stream(mini_server, "data:image/png;base64," + base64.b64encode(png).decode(),
                                     question)
    assert kinds[0] == "thinking" and "text" in kinds
    assert kinds.index("text") > max(i for i, k in enumerate(kinds) if k == "thinking")  # trace, then answer
    assert "=" in thinking and answer.strip()  # the trace reads the bars: "A=3 B=7 …"


def test_thinking_then_the_answer_for_a_loopback_url(mini_server: Server, tmp_path: Path) -> None:
    images = ImageServer()
    try:
        url = f"http://127.0.0.1:{images.port}/cat.png"
        kinds, _, answer = stream(mini_server, url, "How many bars are there?")
    finally:
        images.httpd.shutdown()
    assert images.hits == 1
    assert kinds[0] == "thinking" and kinds[-1] == "text" and answer.strip()
