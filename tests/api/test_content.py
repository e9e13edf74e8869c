"""Assistant text → Mistral content shapes (the default model does not think, so these feed
the reasoning paths directly)."""

from __future__ import annotations

from magistral.api.content import assistant_message, segment_delta
from magistral.chat.reasoning import Segment


def test_plain_answer_is_a_string() -> None:
    message = assistant_message("Paris.")
    assert message == {"role": "assistant", "content": "Paris.", "tool_calls": None, "prefix": False}


def test_trace_becomes_a_thinking_chunk_then_text() -> None:
    content = assistant_message("[THINK]capital of France?[/THINK]Paris.")["content"]
    assert content == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "capital of France?"}], "closed": True},
        {"type": "text", "text": "Paris."}]


def test_unclosed_trace_is_marked_open() -> None:
    content = assistant_message("<think>still going")["content"]
    assert content == [{"type": "thinking", "thinking": [{"type": "text", "text": "still going"}],
                        "closed": False}]


def test_stream_deltas() -> None:
    assert segment_delta(Segment("text", "hi")) == {"content": "hi"}
    assert segment_delta(Segment("thinking", "hm")) == {
        "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}]}
