"""The streaming [THINK] / <think> splitter, fed token by token from the real tokenizer."""

from __future__ import annotations

from magistral.chat.reasoning import ReasoningSplitter, Segment, split_reasoning
from magistral.chat.tokenizer import GGUFTokenizer, IncrementalDecoder


def feed_all(deltas: list[str]) -> tuple[list[Segment], ReasoningSplitter]:
    splitter = ReasoningSplitter()
    segments: list[Segment] = []
    for delta in deltas:
        segments += splitter.feed(delta)
    segments += splitter.flush()
    merged: list[Segment] = []
    for seg in segments:
        if merged and merged[-1].kind == seg.kind:
            merged[-1].text += seg.text
        else:
            merged.append(Segment(seg.kind, seg.text))
    return merged, splitter


def token_deltas(tokenizer: GGUFTokenizer, text: str) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(i) for i in tokenizer.encode(text)]


def test_text_tags_split_across_tokens(tokenizer: GGUFTokenizer) -> None:
    deltas = token_deltas(tokenizer, "<think>Let me add: 2+2=4.</think>The answer is 4.")
    assert not any(d in ("<think>", "</think>") for d in deltas)  # the tags really are split
    segments, splitter = feed_all(deltas)
    assert segments == [Segment("thinking", "Let me add: 2+2=4."), Segment("text", "The answer is 4.")]
    assert splitter.closed and not splitter.thinking


def test_bracket_tags_character_by_character() -> None:
    text = "[THINK]hmm [not a tag] ok[/THINK]Answer: [4]"
    segments, _ = feed_all(list(text))
    assert segments == [Segment("thinking", "hmm [not a tag] ok"), Segment("text", "Answer: [4]")]


def test_unclosed_trace_at_max_tokens_stays_thinking() -> None:
    segments, unclosed = split_reasoning("[THINK]step one, step tw")
    assert segments == [Segment("thinking", "step one, step tw")] and unclosed


def test_no_trace_is_plain_text_including_lookalikes() -> None:
    segments, unclosed = split_reasoning("Use <thin> or [THIN] tags? <th")
    assert segments == [Segment("text", "Use <thin> or [THIN] tags? <th")] and not unclosed


def test_streamed_segments_never_contain_tag_text() -> None:
    splitter = ReasoningSplitter()
    out = [splitter.feed(d) for d in ["<thi", "nk>a", "b</th", "ink", ">c"]] + [splitter.flush()]
    flat = [s for group in out for s in group]
    assert "".join(s.text for s in flat if s.kind == "thinking") == "ab"
    assert "".join(s.text for s in flat if s.kind == "text") == "c"
    assert all("<" not in s.text and ">" not in s.text for s in flat)
