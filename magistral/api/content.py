"""Assistant output → Mistral content: a plain string, or thinking + text chunks."""

from __future__ import annotations

from typing import Any

from magistral.chat.reasoning import Segment, split_reasoning


def _thinking_chunk(text: str, closed: bool | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"type": "thinking", "thinking": [{"type": "text", "text": text}]}
    if closed is not None:
        chunk["closed"] = closed
    return chunk


def assistant_message(text: str) -> dict[str, Any]:
    """A whole completion as a message; a reasoning trace becomes a thinking chunk (with
    `closed: false` when generation stopped inside it)."""
    segments, unclosed = split_reasoning(text)
    if not any(s.kind == "thinking" for s in segments):
        content: Any = text
    else:
        content = [
            _thinking_chunk(s.text, closed=not (unclosed and i == len(segments) - 1))
            if s.kind == "thinking" else {"type": "text", "text": s.text}
            for i, s in enumerate(segments)]
    return {"role": "assistant", "content": content, "tool_calls": None, "prefix": False}


def segment_delta(segment: Segment) -> dict[str, Any]:
    """A streamed piece: thinking as a list with one thinking chunk, answer text as a string."""
    if segment.kind == "thinking":
        return {"content": [_thinking_chunk(segment.text)]}
    return {"content": segment.text}
