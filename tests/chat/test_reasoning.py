"""The streaming [THINK] / <think> splitter, fed token by token from the real tokenizer."""

from __future__ import annotations

from magistral.chat.reasoning import ReasoningSplitter, Segment, ThinkingCounter, split_reasoning
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


def _count(outputs: list[tuple[str, int]]) -> list[int]:
    """Thinking tokens after each (text, completion tokens so far) output."""
    counter = ThinkingCounter()
    return [counter.feed(text, tokens) for text, tokens in outputs]


def test_thinking_tokens_are_the_traces_markers_included() -> None:
    # one output per token, as the engine sends them: [THINK] a b [/THINK] answer
    assert _count([("[THINK]", 1), ("a", 2), ("b", 3), ("[/THINK]", 4), ("answer", 5)]) == [1, 2, 3, 4, 4]
    # text before the trace is answer; a second trace adds its own span
    assert _count([("Hm", 1), ("[THINK]", 2), ("x", 3), ("[/THINK]", 4), ("[THINK]", 5), ("[/THINK]", 6),
                   ("ok", 7)])[-1] == 3 + 2
    # a trace cut short (max_tokens, client gone) counts to the last token generated
    assert _count([("[THINK]", 1), ("a", 2), ("", 3)]) == [1, 2, 3]
    # a stray [/THINK] before any trace is text, as the splitter shows it
    assert _count([("[/THINK]", 1), ("a", 2)]) == [0, 0]
    assert _count([("plain", 1), ("text", 2)]) == [0, 0]


def test_held_back_text_and_split_tags_are_placed_by_their_last_token() -> None:
    # a character's first byte held back by the engine: it comes with the marker that follows
    assert _count([("", 1), ("é[THINK]", 2), ("x", 3), ("[/THINK]", 4)])[-1] == 3
    # text tags arrive in pieces: the trace starts at the token that completes the opening tag
    assert _count([("<thi", 1), ("nk>", 2), ("a", 3), ("</th", 4), ("ink>", 5), ("b", 6)])[-1] == 4
    # an upstream's markers are its own text, not tokens: never more than the tokens generated
    counter = ThinkingCounter()
    assert counter.feed("[THINK]a", 0) == 0 and counter.feed("b", 1) == 1
