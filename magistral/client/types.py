"""What the client returns: a completed chat response and the events of a stream, with the
answer and the reasoning trace (thinking chunks) kept apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def split_content(content: Any, reasoning_content: str | None = None) -> tuple[str, str]:
    """(text, thinking) of a message's or delta's content: a string, or Mistral's chunk list."""
    if isinstance(content, str) or content is None:
        return content or "", reasoning_content or ""
    text, thinking = [], []
    for chunk in content:
        if chunk.get("type") == "text":
            text.append(chunk.get("text", ""))
        elif chunk.get("type") == "thinking":
            thinking.extend(t.get("text", "") for t in chunk.get("thinking", []))
    return "".join(text), "".join(thinking)


@dataclass
class ChatResponse:
    raw: dict[str, Any]  # the JSON body as the server sent it

    @property
    def message(self) -> dict[str, Any]:
        return self.raw["choices"][0]["message"]

    @property
    def text(self) -> str:
        return split_content(self.message.get("content"), self.message.get("reasoning_content"))[0]

    @property
    def thinking(self) -> str:
        return split_content(self.message.get("content"), self.message.get("reasoning_content"))[1]

    @property
    def finish_reason(self) -> str | None:
        return self.raw["choices"][0].get("finish_reason")

    @property
    def usage(self) -> dict[str, int]:
        return self.raw.get("usage") or {}

    @property
    def model(self) -> str:
        return self.raw.get("model", "")


@dataclass
class StreamEvent:
    kind: str  # "text", "thinking" or "end"
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None

    @property
    def thinking(self) -> str:
        return self.text if self.kind == "thinking" else ""


def stream_events(payload: dict[str, Any]) -> list[StreamEvent]:
    """The events of one `data:` chunk of a chat completion stream."""
    events = []
    choice = payload["choices"][0]
    delta = choice.get("delta", {})
    content = delta.get("content")
    if isinstance(content, list):
        for part in content:
            text, thinking = split_content([part])
            if thinking:
                events.append(StreamEvent("thinking", thinking))
            if text:
                events.append(StreamEvent("text", text))
    else:
        if delta.get("reasoning_content"):
            events.append(StreamEvent("thinking", delta["reasoning_content"]))
        if content:
            events.append(StreamEvent("text", content))
    if choice.get("finish_reason"):
        events.append(StreamEvent("end", finish_reason=choice["finish_reason"], usage=payload.get("usage")))
    return events
