from __future__ import annotations

import torch

from magistral.engine.sampling import Sampler, SamplingParams
from magistral.engine.stops import StopMatcher


def draws(params: SamplingParams, logits: torch.Tensor, n: int = 50) -> list[int]:
    sampler = Sampler(params, logits.shape[0])
    return [sampler.sample(logits) for _ in range(n)]


def test_same_seed_same_tokens_and_different_seed_differs() -> None:
    logits = torch.randn(1000)
    assert draws(SamplingParams(temperature=1.0, seed=7), logits) == \
        draws(SamplingParams(temperature=1.0, seed=7), logits)
    assert draws(SamplingParams(temperature=1.0, seed=7), logits) != \
        draws(SamplingParams(temperature=1.0, seed=8), logits)


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(100)
    assert set(draws(SamplingParams(temperature=0.0), logits)) == {int(logits.argmax())}


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05]))
    picked = set(draws(SamplingParams(temperature=1.0, top_p=0.75, seed=1), logits, 400))
    assert picked == {0, 1}
    assert draws(SamplingParams(temperature=1.0, top_p=0.0, seed=1), logits, 20) == [0] * 20


def test_frequency_penalty_discourages_repeats() -> None:
    logits = torch.tensor([2.0, 1.9])
    sampler = Sampler(SamplingParams(temperature=0.0, frequency_penalty=1.0), 2)
    first = sampler.sample(logits)
    sampler.observe(first)
    assert (first, sampler.sample(logits)) == (0, 1)


def test_stop_matcher_across_deltas() -> None:
    matcher = StopMatcher(["###", "\nUser:"])
    out = [matcher.feed(d) for d in ["Hello #", "# not", " yet\nUs", "er: more"]]
    assert out == [("Hello ", False), ("## not", False), (" yet", False), ("", True)]
    assert StopMatcher([]).feed("abc") == ("abc", False)
    held = StopMatcher(["END"])
    assert held.feed("the EN") == ("the ", False) and held.flush() == "EN"
