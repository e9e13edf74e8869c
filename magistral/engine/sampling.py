"""Turning logits into the next token: penalties, temperature, nucleus (top-p), seeded RNG."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int | None = None  # None: until a stop condition or the context end
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; k: each sampled token's logprob and the top k


@dataclass
class TokenLogprob:
    """A token's log-probability under the model (before temperature and penalties) and the k
    most likely tokens at its position."""
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def token_logprobs(logits: torch.Tensor, targets: list[int], k: int) -> list[TokenLogprob]:
    """logits (T, vocab) predicting targets (T,) → one TokenLogprob per target."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1).tolist()
    if k > 0:
        values, ids = logprobs.topk(k, dim=-1)
        tops = [list(zip(row_ids, row_values, strict=True))
                for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)]
    else:
        tops = [[] for _ in targets]
    return [TokenLogprob(t, lp, top) for t, lp, top in zip(targets, chosen, tops, strict=True)]


class Sampler:
    """Per-request sampler; a fixed seed gives the same token sequence every time."""

    def __init__(self, params: SamplingParams, vocab_size: int):
        self.params = params
        self.generator = torch.Generator().manual_seed(
            params.seed if params.seed is not None else secrets.randbits(63))
        self.penalized = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self.counts = torch.zeros(vocab_size) if self.penalized else None

    def observe(self, token_id: int) -> None:
        if self.counts is not None and token_id < self.counts.shape[0]:
            self.counts[token_id] += 1

    def sample(self, logits: torch.Tensor) -> int:
        """logits: (vocab,) float32 for the next position."""
        p = self.params
        if self.counts is not None:
            logits = logits - p.frequency_penalty * self.counts - p.presence_penalty * (self.counts > 0)
        if p.temperature <= 0.0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            outside = (cumulative - sorted_probs) >= p.top_p
            outside[0] = False
            sorted_probs[outside] = 0.0
            choice = torch.multinomial(sorted_probs, 1, generator=self.generator)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=self.generator))
