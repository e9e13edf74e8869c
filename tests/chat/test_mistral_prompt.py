"""Prompts for Mistral-family models through mistral-common, with our image encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.chat.tekken import write_v13_tekken
from tests.conftest import TINY_IMAGE


def prompter(tmp_path: Path, image: dict | None = TINY_IMAGE) -> MistralPrompter:
    return MistralPrompter(write_v13_tekken(tmp_path / "tekken.json", image=image))


def test_v13_tokenizer_has_reasoning_and_image_tokens(tmp_path: Path) -> None:
    p = prompter(tmp_path)
    assert p.reasoning and p.vision
    tok = p.mistral.instruct_tokenizer.tokenizer
    assert tok.get_special_token("[THINK]") == 34 and tok.get_special_token("[/THINK]") == 35
    assert tok.get_special_token("[IMG]") == 10 and tok.n_words == 131072
    assert p.tokenizer.decode([34, *tok.encode("hmm", bos=False, eos=False), 35, 2]) == "[THINK]hmm[/THINK]"
    assert not prompter(tmp_path, image=None).vision


def test_reasoning_system_prompt_and_prompt_mode(tmp_path: Path) -> None:
    p = prompter(tmp_path)
    user = [{"role": "user", "content": "What is 2+2?"}]
    with_prompt = p.encode(user, reasoning_prompt=True).ids
    without = p.encode(user, reasoning_prompt=False).ids
    assert 34 in with_prompt and 35 in with_prompt and 17 in with_prompt  # [THINK] in [SYSTEM_PROMPT]
    assert 34 not in without and 17 not in without
    own = p.encode([{"role": "system", "content": "Be terse."}, *user], reasoning_prompt=True).ids
    assert 34 not in own and 17 in own  # the user's system prompt replaces the default


def test_images_are_laid_out_and_preprocessed(tmp_path: Path) -> None:
    p = prompter(tmp_path)
    images = [Image.new("RGB", (16, 24), "red"), Image.new("RGB", (40, 8), "blue")]
    messages = [{"role": "user", "content": [{"type": "text", "text": "compare"},
                                             {"type": "image", "image": images[0]},
                                             {"type": "image", "image": images[1]}]}]
    prompt = p.encode(messages, reasoning_prompt=False)
    # 16x24 px with 4 px patches merged 2x2 → 2 columns x 3 rows; 40x8 → 5 x 1
    assert prompt.ids.count(10) == 2 * 3 + 5 * 1
    assert prompt.ids.count(12) == (3 - 1) + (1 - 1) and prompt.ids.count(13) == 2
    assert [tuple(i.shape) for i in prompt.images] == [(3, 24, 16), (3, 8, 40)]
    assert np.isfinite(prompt.images[0].numpy()).all()


def test_thinking_chunks_in_history_become_think_tokens(tmp_path: Path) -> None:
    p = prompter(tmp_path)
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "greet back"}]},
                    {"type": "text", "text": "Hello!"}]},
                {"role": "user", "content": "bye"}]
    ids = p.encode(messages, reasoning_prompt=False).ids
    assert ids.index(34) < ids.index(35)


def test_a_fixed_size_column_token_model_gets_every_image_stretched(tmp_path: Path) -> None:
    """magistral-mini's images: any size and aspect → 16×32 px, one [IMG] per patch column, [IMG_END]."""
    from tests.model.test_checkpoints import column_token_args

    p = MistralPrompter(write_v13_tekken(tmp_path / "tekken.json", image=TINY_IMAGE),
                        column_token_args().vision)
    for size in [(16, 24), (300, 40), (5, 90)]:
        image = {"type": "image", "image": Image.new("RGB", size, "red")}
        prompt = p.encode([{"role": "user", "content": [image]}], reasoning_prompt=False)
        assert [tuple(i.shape) for i in prompt.images] == [(3, 16, 32)]
        first = prompt.ids.index(10)
        assert prompt.ids[first:first + 9] == [10] * 8 + [13] and prompt.ids.count(12) == 0
    assert p.max_image_tokens == 9
