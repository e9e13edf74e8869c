"""GRPO on chart questions, as the Magistral paper trains its reasoners.

    magistral train grpo --init runs/mini/model --out runs/mini-grpo [--steps 200] [--resume]

Each step draws `prompts_per_step` questions, samples a group of `group_size` answers to each
with our own batched engine (the weights being trained, at temperature 1), scores every answer,
and takes `updates_per_batch` gradient steps on the clipped policy objective:

- no KL term and no reference model;
- advantages normalised within the group, (r − mean) / std; groups whose rewards are all equal
  teach nothing and are dropped;
- the loss of a group is normalised by the group's total generated tokens, so long answers do
  not weigh more than short ones;
- clip-higher: the ratio is clipped to [1 − ε_low, 1 + ε_high] with ε_high > ε_low, leaving room
  for unlikely tokens to grow (ε_low 0.2, ε_high 0.28 by default);
- reward = format (a closed trace, then an answer: 0.1) + correctness (0.9) − a soft length
  penalty over the last `length_grace` tokens before `max_tokens`.

The first and the last evaluation use the same held-out questions, so `comparison.md` in the run
folder is the SFT-vs-GRPO table of one run.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.engine.engine import Engine, GenerationRequest
from magistral.engine.sampling import SamplingParams
from magistral.model.checkpoints import load_consolidated, save_consolidated
from magistral.model.moe import MoeFeedForward, load_balancing_loss
from magistral.model.transformer import Transformer
from magistral.train.bookkeeping import Bookkeeping
from magistral.train.data import user_message
from magistral.train.distributed import average_gradients, distributed
from magistral.train.sft import BALANCE_WEIGHT, answer_of, evaluate
from magistral.train.tasks.charts import Example, example


@dataclass
class GRPOConfig:
    init: Path  # a model folder in Mistral's format with its tekken.json (an SFT run's model/)
    out: Path
    steps: int = 200
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 1e-4
    temperature: float = 1.0
    max_tokens: int = 96
    length_grace: int = 32  # the soft length penalty grows over these last tokens before max_tokens
    updates_per_batch: int = 2  # gradient steps on one batch of rollouts (the clip bounds them)
    micro_batch: int = 16  # sequences per forward/backward
    clip_low: float = 0.2
    clip_high: float = 0.28
    reasoning_prompt_share: float = 0.5
    seed: int = 0
    checkpoint_every: int = 20
    eval_every: int = 50
    eval_size: int = 48
    minutes: float | None = None
    resume: bool = False


@dataclass
class Rollout:
    prompt_ids: list[int]
    images: list[torch.Tensor]
    completion: list[int]  # the sampled tokens, the end-of-sequence token included when sampled
    old_logprobs: list[float]  # under the policy that sampled them
    reward: float
    correct: bool
    advantage: float = 0.0


def reward_of(text: str, completion_tokens: int, ex: Example, cfg: GRPOConfig) -> tuple[float, bool]:
    """(reward, exact answer). No closed trace or no answer: 0, whatever the answer."""
    answer, closed = answer_of(text)
    if not closed or not answer:
        return 0.0, False
    correct = answer == ex.answer
    over = completion_tokens - (cfg.max_tokens - cfg.length_grace)
    penalty = 0.1 * min(1.0, max(0, over) / cfg.length_grace)
    return 0.1 + 0.9 * correct - penalty, correct


def group_advantages(rewards: list[float]) -> list[float] | None:
    """(r − mean) / std within a group; None when every reward is the same."""
    if max(rewards) - min(rewards) < 1e-6:
        return None
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
    return [(r - mean) / (std + 1e-4) for r in rewards]


def sample_groups(
    engine: Engine, prompter: MistralPrompter, examples: list[Example], reasoning: list[bool],
    cfg: GRPOConfig, eos: int, seed: int,
) -> list[list[Rollout]]:
    params = [SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, logprobs=0,
                             seed=seed * 100_000 + i) for i in range(len(examples) * cfg.group_size)]

    async def one(ex: Example, with_prompt: bool, sampling: SamplingParams) -> Rollout:
        prompt = prompter.encode(user_message(ex), reasoning_prompt=with_prompt)
        text, tokens, logprobs, finish = "", [], [], None
        async for out in engine.generate(GenerationRequest(prompt.ids, sampling, prompt.images)):
            text += out.text
            tokens += [lp.token for lp in out.logprobs]
            logprobs += [lp.logprob for lp in out.logprobs]
            finish = out.finish_reason or finish
        if finish == "stop" and (not tokens or tokens[-1] != eos):
            tokens.append(eos)  # the engine reports the stop token's choice only by stopping
            logprobs.append(float("nan"))  # filled in by the first forward pass
        reward, correct = reward_of(text, len(tokens), ex, cfg)
        return Rollout(prompt.ids, prompt.images, tokens, logprobs, reward, correct)

    async def run() -> list[Rollout]:
        jobs = [one(ex, reasoning[i], params[i * cfg.group_size + g])
                for i, ex in enumerate(examples) for g in range(cfg.group_size)]
        return await asyncio.gather(*jobs)

    flat = asyncio.run(run())
    return [flat[i:i + cfg.group_size] for i in range(0, len(flat), cfg.group_size)]


def sequence_logprobs(model: Transformer, rollouts: list[Rollout], pad_id: int = 11) -> list[torch.Tensor]:
    """Each rollout's completion-token logprobs under `model` (with grad)."""
    width = max(len(r.prompt_ids) + len(r.completion) for r in rollouts)
    tokens = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    for row, r in enumerate(rollouts):
        ids = r.prompt_ids + r.completion
        tokens[row, : len(ids)] = torch.tensor(ids)
    images = [image for r in rollouts for image in r.images]
    logits = model(None, embeddings=model.embed(tokens, images))
    out = []
    for row, r in enumerate(rollouts):
        start = len(r.prompt_ids)
        picked = logits[row, start - 1 : start - 1 + len(r.completion)]
        out.append(F.log_softmax(picked.float(), -1).gather(-1, torch.tensor(r.completion)[:, None])[:, 0])
    return out


def policy_loss(
    new: torch.Tensor, old: torch.Tensor, advantage: float, weight: float, cfg: GRPOConfig
) -> torch.Tensor:
    """Σ over one rollout's tokens of the clipped surrogate, times the group's normaliser."""
    ratio = torch.exp(new - old)
    clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    return -weight * torch.minimum(ratio * advantage, clipped * advantage).sum()


def weigh(groups: list[list[Rollout]]) -> tuple[list[Rollout], list[float]]:
    """The rollouts of groups that teach something, each with its advantage set, and each
    token's loss weight: 1 / (its group's generated tokens × groups kept)."""
    kept: list[Rollout] = []
    weights: list[float] = []
    groups_kept = 0
    for group in groups:
        advantages = group_advantages([r.reward for r in group])
        if advantages is None:
            continue
        groups_kept += 1
        tokens = sum(len(r.completion) for r in group)
        for r, a in zip(group, advantages, strict=True):
            r.advantage = a
            kept.append(r)
            weights.append(1.0 / tokens)
    return kept, [w / max(1, groups_kept) for w in weights]


def policy_step(
    model: Transformer, optimizer: torch.optim.Optimizer, kept: list[Rollout], weights: list[float],
    cfg: GRPOConfig, first: bool, world: int = 1,
) -> float:
    """One gradient step of the clipped objective over `kept` (micro-batched); the loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(0, len(kept), cfg.micro_batch):
        chunk, chunk_w = kept[i:i + cfg.micro_batch], weights[i:i + cfg.micro_batch]
        new = sequence_logprobs(model, chunk)
        loss = torch.zeros(())
        for r, w, lp in zip(chunk, chunk_w, new, strict=True):
            old = torch.tensor(r.old_logprobs)
            if first:  # tokens the engine gave no logprob for take this pass's own
                old = torch.where(old.isnan(), lp.detach(), old)
                r.old_logprobs = old.tolist()
            loss = loss + policy_loss(lp, old, r.advantage, w, cfg)
        routers = [m.router_logits for m in model.modules() if isinstance(m, MoeFeedForward)]
        if routers and model.args.moe:
            moe = model.args.moe
            balance = load_balancing_loss(routers, moe.num_experts, moe.num_experts_per_tok)
            loss = loss + BALANCE_WEIGHT * balance * len(chunk) / len(kept)
        loss.backward()
        total += loss.item()
    average_gradients(model, world)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return total


def train(cfg: GRPOConfig) -> Path:
    rank, world = distributed()
    device = torch.device("cpu")  # the engine samples on the CPU; see the README for CUDA
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "model").mkdir(exist_ok=True)
    shutil.copy(cfg.init / "tekken.json", cfg.out / "model" / "tekken.json")
    model, _ = load_consolidated(cfg.init)
    prompter = MistralPrompter(cfg.out / "model" / "tekken.json", model.args.vision)
    eos = prompter.mistral.instruct_tokenizer.tokenizer.eos_id
    model.to(device)
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    start = 0
    book = Bookkeeping(cfg.out, rank, cfg.steps, cfg.minutes, cfg.eval_every, cfg.checkpoint_every)
    if cfg.resume and book.checkpoint.is_file():
        state = torch.load(book.checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    if start == 0 and rank == 0 and cfg.eval_every:
        book.write({"step": 0, **evaluate(model, prompter, cfg.eval_size, cfg.seed)})
    # keys and values of older weights must not be reused: no prefix cache
    engine = Engine(model, prompter.tokenizer, max_active=cfg.prompts_per_step * cfg.group_size,
                    prefix_cache_mb=0)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=rank != 0, desc="grpo")
    for step in bar:
        rng = random.Random(f"grpo-{cfg.seed}-{step}-{rank}")
        examples = [example(rng) for _ in range(cfg.prompts_per_step)]
        reasoning = [rng.random() < cfg.reasoning_prompt_share for _ in examples]
        model.eval()
        with torch.no_grad():
            groups = sample_groups(engine, prompter, examples, reasoning, cfg, eos,
                                   seed=(cfg.seed * 1_000_003 + step) * 64 + rank)
        model.train()
        kept, weights = weigh(groups)
        rollouts = [r for g in groups for r in g]
        record: dict[str, float] = {
            "step": step + 1,
            "reward": round(statistics.fmean(r.reward for r in rollouts), 4),
            "correct": round(statistics.fmean(r.correct for r in rollouts), 4),
            "completion_tokens": round(statistics.fmean(len(r.completion) for r in rollouts), 1),
            "groups_kept": len(kept) // cfg.group_size,
        }
        for update in range(cfg.updates_per_batch if kept else 0):
            policy_step(model, optimizer, kept, weights, cfg, first=update == 0, world=world)
        record["seconds"] = book.elapsed()
        bar.set_postfix(reward=f"{record['reward']:.2f}", correct=f"{record['correct']:.2f}",
                        tokens=f"{record['completion_tokens']:.0f}")
        if book.end_step(step, record, bar, model, optimizer, cfg,
                         lambda: evaluate(model, prompter, cfg.eval_size, cfg.seed)):
            break
    book.close()
    engine.shutdown()
    if rank == 0:
        save_consolidated(model.cpu(), cfg.out / "model")
        plot(cfg.out / "log.jsonl", cfg.out / "grpo.png")
        table = comparison_table(cfg.out / "log.jsonl")
        if table:
            (cfg.out / "comparison.md").write_text(table)
    return cfg.out / "model"


def comparison_table(log_path: Path) -> str | None:
    """Markdown: the first evaluation of the run (the SFT weights, step 0) against the last, on
    the same held-out questions — answers overall and per kind, closed traces, mean tokens."""
    evals = [json.loads(line) for line in log_path.read_text().splitlines() if '"accuracy"' in line]
    if len(evals) < 2 or evals[0]["step"] != 0:
        return None
    columns = ["accuracy", *sorted(k for k in evals[0] if k.startswith("accuracy/")),
               "closed_traces", "completion_tokens"]
    lines = ["| checkpoint | " + " | ".join(c.replace("accuracy/", "") for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, scores in (("SFT (GRPO step 0)", evals[0]), (f"GRPO step {evals[-1]['step']}", evals[-1])):
        cells = [f"{scores[c]:.1f}" if c == "completion_tokens" else f"{100 * scores[c]:.1f}%"
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(log_path: Path, image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "reward" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["step"] for r in steps], [r["reward"] for r in steps], lw=0.8, label="mean reward")
    left.plot([r["step"] for r in steps], [r["correct"] for r in steps], lw=0.8, label="rollouts correct")
    left.set(title="rollouts", xlabel="step", ylim=(0, 1))
    left.legend()
    evals = [r for r in records if "accuracy" in r]
    right.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="answers (held out)")
    twin = right.twinx()
    twin.plot([r["step"] for r in steps], [r["completion_tokens"] for r in steps], lw=0.6, color="grey")
    twin.set_ylabel("completion tokens")
    right.set(title="held-out accuracy", xlabel="step", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(image, dpi=100)
    plt.close(fig)
