"""GRPO (the smoke version of `magistral train grpo`): rewards, group advantages and the
clip-higher objective as the Magistral paper defines them; a policy step makes the better answers
of a group more likely; a short run from the SFT smoke checkpoint logs, resumes, writes its
comparison table and exports a model that serves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import torch

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.engine.engine import Engine
from magistral.model.checkpoints import load_consolidated
from magistral.train.data import user_message
from magistral.train.grpo import (
    GRPOConfig,
    Rollout,
    group_advantages,
    policy_loss,
    policy_step,
    reward_of,
    sample_groups,
    sequence_logprobs,
    train,
    weigh,
)
from magistral.train.tasks.charts import example
from tests.conftest import start_server, stop_server


def test_rewards_format_then_correctness_then_length() -> None:
    ex = example(random.Random(3), "count")
    cfg = GRPOConfig(init=Path("."), out=Path("."), max_tokens=96, length_grace=32)
    right = f"[THINK]... {ex.answer} bars[/THINK]{ex.answer}"
    assert reward_of(right, 20, ex, cfg) == (1.0, True)
    assert reward_of("[THINK]...[/THINK]99", 20, ex, cfg) == (pytest.approx(0.1), False)
    assert reward_of(f"[THINK]... {ex.answer}", 20, ex, cfg) == (0.0, False)  # never closed
    assert reward_of(f"{ex.answer}[/THINK]{ex.answer}", 20, ex, cfg) == (0.0, False)  # never opened
    assert reward_of("[THINK]...[/THINK]", 20, ex, cfg) == (0.0, False)  # no answer
    assert reward_of(right, 80, ex, cfg)[0] == pytest.approx(1.0 - 0.1 * 16 / 32)  # soft penalty
    assert reward_of(right, 96, ex, cfg)[0] == pytest.approx(0.9)


def test_group_advantages_are_normalised_and_flat_groups_dropped() -> None:
    assert group_advantages([1.0, 1.0, 1.0]) is None
    advantages = group_advantages([0.0, 0.1, 1.0, 1.0])
    assert advantages is not None
    assert sum(advantages) == pytest.approx(0.0, abs=1e-6)
    assert sum(a * a for a in advantages) / 4 == pytest.approx(1.0, rel=1e-3)
    assert advantages[2] > advantages[1] > advantages[0]


def test_clip_higher_bounds_the_ratio_asymmetrically() -> None:
    cfg = GRPOConfig(init=Path("."), out=Path("."), clip_low=0.2, clip_high=0.28)
    old = torch.zeros(1)

    def gradient(log_ratio: float, advantage: float) -> float:
        new = torch.tensor([log_ratio], requires_grad=True)
        policy_loss(new, old, advantage, 1.0, cfg).backward()
        return float(new.grad[0])

    # a good token may grow up to ratio 1.28 (not only 1.2), then the gradient stops
    assert gradient(torch.log(torch.tensor(1.25)).item(), 1.0) < 0
    assert gradient(torch.log(torch.tensor(1.30)).item(), 1.0) == 0
    # a bad token may shrink down to 0.8, then stops
    assert gradient(torch.log(torch.tensor(0.85)).item(), -1.0) > 0
    assert gradient(torch.log(torch.tensor(0.75)).item(), -1.0) == 0


def test_group_loss_is_normalised_by_its_tokens() -> None:
    def rollout(tokens: int, reward: float) -> Rollout:
        return Rollout([1], [], [5] * tokens, [0.0] * tokens, reward, False)

    flat = [rollout(3, 0.0), rollout(3, 0.0)]
    mixed = [rollout(2, 1.0), rollout(6, 0.0)]
    kept, weights = weigh([flat, mixed])
    assert kept == mixed  # the flat group teaches nothing
    assert weights == [pytest.approx(1 / 8)] * 2


def test_a_policy_step_makes_the_better_answers_more_likely(sft_run: Path) -> None:
    torch.manual_seed(0)
    model, _ = load_consolidated(sft_run / "model")
    prompter = MistralPrompter(sft_run / "model" / "tekken.json", model.args.vision)
    tok = prompter.mistral.instruct_tokenizer.tokenizer
    ex = example(random.Random(5), "count")
    prompt = prompter.encode(user_message(ex), reasoning_prompt=False)
    wrong = [str(n) for n in range(3, 7) if str(n) != ex.answer][:3]
    answers = [f"{ex.answer} bars", *(f"{n} bars" for n in wrong)]
    group = [Rollout(prompt.ids, prompt.images, [tok.get_special_token("[THINK]")]
                     + tok.encode(text, bos=False, eos=False), [], reward, reward > 0.5)
             for text, reward in zip(answers, [1.0, 0.0, 0.0, 0.0], strict=True)]
    cfg = GRPOConfig(init=Path("."), out=Path("."), micro_batch=2, group_size=2, max_tokens=4)
    engine = Engine(model, prompter.tokenizer, max_active=2, prefix_cache_mb=0)
    try:  # the weights sample first, as in a run: the engine's inference mode must not leak into training
        with torch.no_grad():
            sample_groups(engine, prompter, [ex], [False], cfg, tok.eos_id, seed=0)
    finally:
        engine.shutdown()
    with torch.no_grad():
        before = [lp.sum().item() for lp in sequence_logprobs(model, group)]
    for r, lp in zip(group, sequence_logprobs(model, group), strict=True):
        r.old_logprobs = lp.detach().tolist()
    kept, weights = weigh([group])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)  # as runs use
    for first in (True, False):
        policy_step(model, optimizer, kept, weights, cfg, first=first)
    with torch.no_grad():
        after = [lp.sum().item() for lp in sequence_logprobs(model, group)]
    assert after[0] > before[0]  # the rewarded answer, and the group's objective, went up
    assert sum(r.advantage * (a - b) for r, a, b in zip(group, after, before, strict=True)) > 0


def test_a_short_run_logs_resumes_compares_and_serves(sft_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    cfg = dict(init=sft_run / "model", out=out, prompts_per_step=2, group_size=4, max_tokens=24,
               length_grace=8, eval_size=6, checkpoint_every=1)
    train(GRPOConfig(steps=2, eval_every=2, **cfg))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert "accuracy" in records[0] and "accuracy" in records[-1] and "reward" in records[1]
    table = (out / "comparison.md").read_text()
    assert "| SFT (GRPO step 0) |" in table and "| GRPO step 2 |" in table
    assert (out / "grpo.png").stat().st_size > 10_000
    train(GRPOConfig(steps=3, eval_every=0, resume=True, **cfg))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps[3:] == [3]  # continued from the checkpoint

    server = start_server(tmp_path, "--model", str(out / "model"), "--no-embedding-model")
    try:
        response = httpx.post(f"{server.base_url}/v1/chat/completions", headers=server.auth(), timeout=60,
                              json={"model": "model", "max_tokens": 8,
                                    "messages": [{"role": "user", "content": "How many bars are there?"}]})
        assert response.status_code == 200, response.text
    finally:
        stop_server(server)
