"""prompt_mode and message flattening, as they reach the chat template."""

from __future__ import annotations

from magistral.chat.messages import SAFE_PROMPT, chunks_to_text, template_messages
from magistral.chat.reasoning import REASONING_SYSTEM_PROMPT

USER = [{"role": "user", "content": "What is 6 x 7?"}]


def test_reasoning_prompt_added_when_no_system_message() -> None:
    out = template_messages(USER, add_reasoning_prompt=True)
    assert out[0]["role"] == "system"
    assert out[0]["content"].startswith("# HOW YOU SHOULD THINK AND ANSWER")
    assert "<think>Your thoughts or/and draft" in out[0]["content"]
    assert out[0]["content"] == chunks_to_text(REASONING_SYSTEM_PROMPT)
    assert out[1:] == USER


def test_user_system_message_replaces_reasoning_prompt() -> None:
    messages = [{"role": "system", "content": "Answer in French."}, *USER]
    assert template_messages(messages, add_reasoning_prompt=True) == messages


def test_no_reasoning_prompt_when_disabled() -> None:
    assert template_messages(USER, add_reasoning_prompt=False) == USER


def test_chunks_flatten_and_safe_prompt_prepends() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "t"}]},
                    {"type": "text", "text": "c"}]},
                {"role": "user", "content": None}]
    out = template_messages(messages, add_reasoning_prompt=False, safe_prompt=True)
    assert out == [{"role": "system", "content": SAFE_PROMPT}, {"role": "user", "content": "ab"},
                   {"role": "assistant", "content": "<think>t</think>c"}, {"role": "user", "content": ""}]
