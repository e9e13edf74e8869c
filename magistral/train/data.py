"""Task examples → training samples, encoded exactly as serving encodes a request: the user's
image and question through mistral-common (with the reasoning system prompt, as the API adds
it by default, or without, as `prompt_mode: null` asks), then the target the model must write:
`[THINK]trace[/THINK]answer</s>`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.chat.tekken import write_v13_tekken
from magistral.train.preset import IMAGE, TOKENIZER_RANKS, magistral_mini_args
from magistral.train.tasks.charts import Example, example


@dataclass
class Sample:
    ids: list[int]  # prompt + target
    target_from: int  # the first target position: the loss covers ids[target_from:]
    images: list[torch.Tensor]
    example: Example


def make_tokenizer(folder: Path) -> MistralPrompter:
    """magistral-mini's tekken.json (written into `folder`) and the prompter that reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_v13_tekken(folder / "tekken.json", image=IMAGE, ranks=TOKENIZER_RANKS)
    return MistralPrompter(path, magistral_mini_args().vision)


def user_message(ex: Example) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": ex.image}, {"type": "text", "text": ex.question}],
        }
    ]


def encode(prompter: MistralPrompter, ex: Example, reasoning_prompt: bool) -> Sample:
    prompt = prompter.encode(user_message(ex), reasoning_prompt=reasoning_prompt)
    tok = prompter.mistral.instruct_tokenizer.tokenizer
    target = (
        [tok.get_special_token("[THINK]")]
        + tok.encode(ex.trace, bos=False, eos=False)
        + [tok.get_special_token("[/THINK]")]
        + tok.encode(ex.answer, bos=False, eos=False)
        + [tok.eos_id]
    )
    return Sample(prompt.ids + target, len(prompt.ids), prompt.images, ex)


def batch(
    prompter: MistralPrompter,
    rng: random.Random,
    size: int,
    reasoning_prompt_share: float,
    kinds: tuple[str, ...] | None = None,
) -> list[Sample]:
    # one choice for the whole batch: a single long prompt would pad every row to its length
    reasoning_prompt = rng.random() < reasoning_prompt_share
    return [
        encode(prompter, example(rng, rng.choice(kinds) if kinds else None), reasoning_prompt)
        for _ in range(size)
    ]


def collate(samples: list[Sample], pad_id: int = 11) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(tokens (B, T), loss mask (B, T-1) over next-token targets, images in prompt order).
    Right padding: with causal attention a pad never changes an earlier position."""
    width = max(len(s.ids) for s in samples)
    tokens = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(samples), width - 1, dtype=torch.bool)
    for row, s in enumerate(samples):
        tokens[row, : len(s.ids)] = torch.tensor(s.ids)
        mask[row, s.target_from - 1 : len(s.ids) - 1] = True  # position t predicts token t+1
    return tokens, mask, [image for s in samples for image in s.images]
