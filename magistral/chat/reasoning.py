"""Reasoning traces: the default reasoning system prompt, and a streaming splitter that moves
`[THINK]…[/THINK]` (special tokens, Magistral 1.1+) or `<think>…</think>` (text tags, 1.0)
spans out of the answer text into thinking chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPEN_TAGS = ("[THINK]", "<think>")
CLOSE_TAGS = ("[/THINK]", "</think>")

# Mistral's default system prompt for reasoning models (mistral-common, experimental docs):
# a text chunk, a thinking chunk describing the scratch-pad, a closing text chunk.
REASONING_SYSTEM_PROMPT: list[dict[str, Any]] = [
    {"type": "text", "text": (
        "# HOW YOU SHOULD THINK AND ANSWER\n\n"
        "First draft your thinking process (inner monologue) until you arrive at a response. "
        "Format your response using Markdown, and use LaTeX for any mathematical equations. "
        "Write both your thoughts and the response in the same language as the input.\n\n"
        "Your thinking process must follow the template below:")},
    {"type": "thinking", "thinking": [{"type": "text", "text": (
        "Your thoughts or/and draft, like working through an exercise on scratch paper. "
        "Be as casual and as long as you want until you are confident to generate the "
        "response to the user.")}]},
    {"type": "text", "text": "Here, provide a self-contained response."},
]


@dataclass
class Segment:
    kind: str  # "thinking" or "text"
    text: str


@dataclass
class ReasoningSplitter:
    """Feed text deltas in order; get (kind, text) segments out, tags removed.

    A tag may arrive split across deltas, so a suffix that could begin a tag is held back
    until the next delta decides it.
    """

    thinking: bool = False
    closed: bool = False  # whether a trace was opened and then closed
    opened: bool = False
    _held: str = field(default="", repr=False)

    def feed(self, delta: str) -> list[Segment]:
        text = self._held + delta
        self._held = ""
        segments: list[Segment] = []
        while text:
            tags = CLOSE_TAGS if self.thinking else OPEN_TAGS
            hits = [(i, tag) for tag in tags if (i := text.find(tag)) >= 0]
            if hits:
                index, tag = min(hits)
                self._append(segments, text[:index])
                text = text[index + len(tag):]
                self.thinking = not self.thinking
                self.opened = True
                self.closed = not self.thinking
                continue
            keep = _partial_tag_suffix(text, tags)
            self._append(segments, text[:len(text) - keep])
            self._held = text[len(text) - keep:]
            break
        return segments

    def flush(self) -> list[Segment]:
        """End of generation: whatever was held back is plain content of the current kind."""
        held, self._held = self._held, ""
        segments: list[Segment] = []
        self._append(segments, held)
        return segments

    def _append(self, segments: list[Segment], text: str) -> None:
        if not text:
            return
        kind = "thinking" if self.thinking else "text"
        if segments and segments[-1].kind == kind:
            segments[-1].text += text
        else:
            segments.append(Segment(kind, text))


def _partial_tag_suffix(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of one of the tags."""
    for n in range(min(len(text), max(len(t) for t in tags) - 1), 0, -1):
        if any(tag.startswith(text[-n:]) for tag in tags):
            return n
    return 0


def split_reasoning(text: str) -> tuple[list[Segment], bool]:
    """Split a whole completion; returns its segments and whether a trace was left unclosed."""
    splitter = ReasoningSplitter()
    segments = splitter.feed(text) + splitter.flush()
    merged: list[Segment] = []
    for seg in segments:
        if merged and merged[-1].kind == seg.kind:
            merged[-1].text += seg.text
        else:
            merged.append(seg)
    return merged, splitter.thinking


@dataclass
class ThinkingCounter:
    """Counts one completion's thinking tokens from the engine's outputs as they come: every token
    of each `[THINK]…[/THINK]` span, both markers included (so a completion's answer is exactly
    its completion tokens minus these); a span left open (max_tokens, a stream cut short) counts
    to the last token generated. Spans are found as `ReasoningSplitter` finds them, so the count
    is of what the response shows as thinking.

    An engine output carries new text and the completion's token count so far. A marker is a
    special token whose text the engine emits at once, so it is the last token of the output
    whose text holds it: the count is exact for [THINK] tokens. (Text tags such as `<think>`,
    several tokens each, are placed at their last token; a stop string that holds a marker's
    text back would place it at the output that releases it.)"""

    thinking: bool = False
    _opened_at: int = 0  # the marker token that opened the current span (1-based)
    _closed: int = 0  # tokens of the spans closed so far
    _generated: int = 0  # the completion's tokens so far
    _held: str = field(default="", repr=False)  # a suffix that may begin a marker

    def feed(self, delta: str, completion_tokens: int) -> int:
        """One output (its text, the completion's token count so far) → thinking tokens so far."""
        self._generated = completion_tokens
        text = self._held + delta
        while True:
            tags = CLOSE_TAGS if self.thinking else OPEN_TAGS
            ends = [i + len(tag) for tag in tags if (i := text.find(tag)) >= 0]
            if not ends:
                break
            text = text[min(ends):]
            if self.thinking:
                self._closed += completion_tokens - self._opened_at + 1
            else:
                self._opened_at = completion_tokens
            self.thinking = not self.thinking
        self._held = text[len(text) - _partial_tag_suffix(text, tags):]
        return self.tokens

    @property
    def tokens(self) -> int:
        open_span = self._generated - self._opened_at + 1 if self.thinking else 0
        # an upstream's synthesized markers are not tokens it counted: never more than generated
        return min(self._closed + open_span, self._generated)
