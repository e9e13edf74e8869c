"""A v13 tekken tokenizer file (with [THINK] / [/THINK]) built from the tekken vocabulary that
ships inside mistral-common, for checkpoints that we make ourselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mistral_common

SHIPPED_TEKKEN = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"

# ranks 0-19 as in every tekken file since v3, then the tokens later versions added
V13_SPECIALS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
]
V13_EXTRA = {32: "[ARGS]", 33: "[CALL_ID]", 34: "[THINK]", 35: "[/THINK]"}


def v13_tekken(image: dict[str, int] | None = None) -> dict[str, Any]:
    """The tokenizer as a dict; `image`: {image_patch_size, max_image_size, spatial_merge_size}."""
    data = json.loads(SHIPPED_TEKKEN.read_text())
    data["config"]["version"] = "v13"
    names = {rank: name for rank, name in enumerate(V13_SPECIALS)} | V13_EXTRA
    # ranks must be contiguous: unnamed ones get mistral-common's filler names
    names = {rank: names.get(rank, f"<SPECIAL_{rank}>") for rank in range(max(names) + 1)}
    data["special_tokens"] = [{"rank": rank, "token_str": names[rank], "is_control": True}
                              for rank in sorted(names)]
    data.pop("multimodal", None)
    if image:
        data["image"] = dict(image)
    else:
        data.pop("image", None)
    return data


def write_v13_tekken(path: str | Path, image: dict[str, int] | None = None, ranks: int | None = None) -> Path:
    """`ranks`: keep only the first that many BPE ranks (the 256 bytes and the most frequent
    merges), which is still a valid byte-level BPE: a small model's embedding and head shrink
    from 131k rows to a few thousand, at the cost of longer token sequences."""
    data = v13_tekken(image)
    if ranks is not None:
        if ranks < 256:
            raise ValueError("a byte-level BPE needs at least the 256 byte ranks")
        data["vocab"] = data["vocab"][:ranks]
        data["config"]["num_vocab_tokens"] = ranks
        data["config"]["default_vocab_size"] = ranks + data["config"]["default_num_special_tokens"]
    path = Path(path)
    path.write_text(json.dumps(data))
    return path
