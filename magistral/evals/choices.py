"""Multiple-choice prompts and answer-letter extraction that tolerates chatter: "The answer is
(B)", "**Answer: C**", "B) because …", or a bare letter."""

from __future__ import annotations

import re
from functools import cache

LETTERS = "ABCDEFGH"


@cache
def _patterns(letters: str) -> list[re.Pattern[str]]:
    group = f"[{letters}]"
    return [re.compile(rf"answer\s*(?:is|:)?\s*\(?\**({group})\b", re.IGNORECASE),
            re.compile(rf"^\s*\(?({group})[\).:\s]", re.MULTILINE),
            re.compile(rf"\b({group})\b")]


def extract_letter(text: str, n_options: int = 4) -> str | None:
    letters = LETTERS[:n_options]
    for pattern in _patterns(letters):
        if m := pattern.search(text):
            return m.group(1).upper()
    return None


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
