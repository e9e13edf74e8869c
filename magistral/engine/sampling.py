"""Turning logits into the next token: logit bias, penalties, temperature, top-k, min-p, nucleus
(top-p), seeded RNG."""

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
    repetition_penalty: float = 1.0  # CTRL/Hugging Face style, over prompt and output tokens
    top_k: int = 0  # 0: all tokens
    min_p: float = 0.0  # drop tokens less likely than min_p × the most likely one
    logit_bias: dict[int, float] = field(default_factory=dict)  # added to the logits, -100…100
    logprobs: int | None = None  # None: none; k: each sampled token's logprob and the top k


@dataclass
class TokenLogprob:
    """A token's log-probability under the model (before temperature and penalties) and the k
    most likely tokens at its position."""
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def token_logprobs(logits: torch.Tensor, targets: list[int], k: int) -> list[TokenLogprob]:
    """logits (T, vocab) predicting targets (T,) → one TokenLogprob per target. Reads the logits
    in place (logit − logsumexp) rather than materialising a second (T, vocab) tensor: scoring
    prompts hands in hundreds of rows at once."""
    logits = logits.float()
    norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (T, 1)
    chosen = (logits.gather(1, torch.tensor(targets).unsqueeze(1)) - norm).squeeze(1).tolist()
    if k > 0:
        values, ids = logits.topk(k, dim=-1)
        tops = [list(zip(row_ids, row_values, strict=True))
                for row_ids, row_values in zip(ids.tolist(), (values - norm).tolist(), strict=True)]
    else:
        tops = [[] for _ in targets]
    return [TokenLogprob(t, lp, top) for t, lp, top in zip(targets, chosen, tops, strict=True)]


class Sampler:
    """Per-request sampler; a fixed seed gives the same token sequence every time."""

    def __init__(self, params: SamplingParams, vocab_size: int, prompt_ids: list[int] | None = None):
        self.params = params
        self.generator = torch.Generator().manual_seed(
            params.seed if params.seed is not None else secrets.randbits(63))
        self.penalized = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self.counts = torch.zeros(vocab_size) if self.penalized else None
        self.seen: torch.Tensor | None = None  # tokens of prompt and output, for repetition_penalty
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool)
            self.seen[[i for i in prompt_ids or [] if 0 <= i < vocab_size]] = True
        self.bias: torch.Tensor | None = None
        if params.logit_bias:
            self.bias = torch.zeros(vocab_size)
            for token, value in params.logit_bias.items():
                if 0 <= token < vocab_size:
                    self.bias[token] = value

    def observe(self, token_id: int) -> None:
        if self.counts is not None and token_id < self.counts.shape[0]:
            self.counts[token_id] += 1
        if self.seen is not None and token_id < self.seen.shape[0]:
            self.seen[token_id] = True

    def sample(self, logits: torch.Tensor) -> int:
        """logits: (vocab,) float32 for the next position. Tokens a grammar forbids arrive as
        -inf and stay so whatever the bias or penalties (finite changes), so they are never sampled."""
        p = self.params
        if self.bias is not None:
            logits = logits + self.bias
        if self.counts is not None:
            logits = logits - p.frequency_penalty * self.counts - p.presence_penalty * (self.counts > 0)
        if self.seen is not None:  # seen tokens: positive logits divided, negative multiplied
            penalized = torch.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
            logits = torch.where(self.seen, penalized, logits)
        if p.temperature <= 0.0:
            return int(torch.argmax(logits))
        if 0 < p.top_k < logits.shape[0]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
            probs = probs / probs.sum()
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
