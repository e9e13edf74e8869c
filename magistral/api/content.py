"""Assistant output → the message: Mistral's content (a plain string, or thinking + text chunks)
or, in the OpenAI-world form, a string `content` plus `reasoning_content`; and tool calls."""

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


def assistant_message(text: str, reasoning: bool = True, reasoning_output: str = "mistral",
                      tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A whole completion as a message; for a reasoning model, a reasoning trace becomes a
    thinking chunk (with `closed: false` when generation stopped inside it), or with
    reasoning_output "openai" the `reasoning_content` string. Other models' text is text,
    `<think>` included."""
    segments, unclosed = split_reasoning(text) if reasoning else ([], False)
    message: dict[str, Any] = {"role": "assistant"}
    if reasoning_output == "openai":
        thinking = [s.text for s in segments if s.kind == "thinking"]
        message["content"] = "".join(s.text for s in segments if s.kind == "text") if thinking else text
        message["reasoning_content"] = "".join(thinking) if thinking else None
    elif not any(s.kind == "thinking" for s in segments):
        message["content"] = text
    else:
        message["content"] = [
            _thinking_chunk(s.text, closed=not (unclosed and i == len(segments) - 1))
            if s.kind == "thinking" else {"type": "text", "text": s.text}
            for i, s in enumerate(segments)]
    return {**message, "tool_calls": tool_calls or None, "prefix": False}


def segment_delta(segment: Segment, reasoning_output: str = "mistral") -> dict[str, Any]:
    """A streamed piece: thinking as a list with one thinking chunk (or, OpenAI-style, as
    `reasoning_content`), answer text as a string."""
    if segment.kind == "thinking":
        if reasoning_output == "openai":
            return {"reasoning_content": segment.text}
        return {"content": [_thinking_chunk(segment.text)]}
    return {"content": segment.text}


def chat_logprobs(decode: Callable[[list[int]], str], entries: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat logprobs object: each sampled token, its logprob, bytes and alternatives."""
    def item(token: int, logprob: float) -> dict[str, Any]:
        text = decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
    return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}
