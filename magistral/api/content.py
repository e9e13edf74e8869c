"""Assistant output → Mistral content: a plain string, or thinking + text chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magistral.chat.reasoning import Segment, split_reasoning
from magistral.engine.sampling import TokenLogprob


def _thinking_chunk(text: str, closed: bool | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"type": "thinking", "thinking": [{"type": "text", "text": text}]}
    if closed is not None:
        chunk["closed"] = closed
    return chunk


def assistant_message(text: str, reasoning: bool = True) -> dict[str, Any]:
    """A whole completion as a message; for a reasoning model, a reasoning trace becomes a
    thinking chunk (with `closed: false` when generation stopped inside it). Other models'
    text is text, `<think>` included."""
    segments, unclosed = split_reasoning(text) if reasoning else ([], False)
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


def chat_logprobs(decode: Callable[[list[int]], str], entries: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat logprobs object: each sampled token, its logprob, bytes and alternatives."""
    def item(token: int, logprob: float) -> dict[str, Any]:
        text = decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
    return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}
