"""Supervised fine-tuning of magistral-mini on generated chart questions with reasoning traces.

    magistral train sft --out runs/mini [--steps 3000] [--minutes 60] [--resume]

Every batch is generated from (seed, step, rank), so a resumed run sees the batches it would
have seen. Checkpoints (model, optimizer, step) every `checkpoint_every` steps; a metrics line per
step in log.jsonl, a loss/accuracy plot in sft.png; at the end the model in Mistral's format
(params.json + consolidated.safetensors + tekken.json) in out/model, which `magistral serve
--model out/model` serves. CUDA when present; `torchrun --nproc-per-node N` trains data-parallel.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.model.checkpoints import save_consolidated
from magistral.model.moe import MoeFeedForward, load_balancing_loss
from magistral.model.transformer import Transformer
from magistral.train.bookkeeping import Bookkeeping
from magistral.train.data import batch, collate, make_tokenizer, user_message
from magistral.train.distributed import average_gradients, distributed
from magistral.train.preset import magistral_mini_args
from magistral.train.tasks.charts import KINDS, example

BALANCE_WEIGHT = 0.01  # the MoE router's load-balancing loss, as Mixtral trains it


@dataclass
class SFTConfig:
    out: Path
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    reasoning_prompt_share: float = 0.25  # samples with the API's default reasoning system prompt
    checkpoint_every: int = 100
    eval_every: int = 500
    eval_size: int = 48
    minutes: float | None = None  # stop early (checkpoint and export) after this long
    resume: bool = False
    kinds: tuple[str, ...] = field(default_factory=lambda: KINDS)


def new_model(device: torch.device) -> Transformer:
    model = Transformer(magistral_mini_args())
    for module in model.modules():  # small-init everywhere: tied logits start near uniform
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    model.tie_weights()
    return model.to(device)


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def loss_of(
    model: Transformer, tokens: torch.Tensor, mask: torch.Tensor, images: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(loss with the balancing term, token loss, share of target tokens predicted right)."""
    logits = model(None, embeddings=model.embed(tokens, images))
    targets = tokens[:, 1:]
    picked = logits[:, :-1][mask]
    token_loss = F.cross_entropy(picked, targets[mask])
    routers = [m.router_logits for m in model.modules() if isinstance(m, MoeFeedForward)]
    balance = (
        load_balancing_loss(routers, model.args.moe.num_experts, model.args.moe.num_experts_per_tok)
        if routers and model.args.moe
        else torch.zeros(())
    )
    accuracy = float((picked.argmax(-1) == targets[mask]).float().mean())
    return token_loss + BALANCE_WEIGHT * balance, token_loss, accuracy


def answer_of(text: str) -> tuple[str | None, bool]:
    """(the answer after a closed trace, whether the trace was closed)."""
    if "[/THINK]" not in text:
        return None, False
    return text.split("[/THINK]", 1)[1].strip(), text.lstrip().startswith("[THINK]")


def evaluate(
    model: Transformer, prompter: MistralPrompter, size: int, seed: int, reasoning_prompt: bool = True
) -> dict[str, float]:
    """Greedy answers to `size` held-out questions (their own seed) through our engine: exact
    answers with a closed trace, overall and per question kind; mean completion tokens."""
    from magistral.engine.engine import Engine, GenerationRequest
    from magistral.engine.sampling import SamplingParams

    rng = random.Random(f"eval-{seed}")
    examples = [example(rng, KINDS[i % len(KINDS)]) for i in range(size)]
    was_training = model.training
    model.eval()
    engine = Engine(model, prompter.tokenizer, max_active=16)

    async def answer(ex) -> tuple[str, int]:
        prompt = prompter.encode(user_message(ex), reasoning_prompt=reasoning_prompt)
        text, tokens = "", 0
        async for out in engine.generate(
            GenerationRequest(prompt.ids, SamplingParams(temperature=0.0, max_tokens=80), prompt.images)
        ):
            text, tokens = text + out.text, out.completion_tokens
        return text, tokens

    async def run() -> list[tuple[str, int]]:
        return await asyncio.gather(*(answer(ex) for ex in examples))

    try:
        answers = asyncio.run(run())
    finally:
        engine.shutdown()
        model.train(was_training)
    right: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    closed = 0
    for ex, (text, _) in zip(examples, answers, strict=True):
        got, was_closed = answer_of(text)
        closed += was_closed
        right[ex.kind].append(was_closed and got == ex.answer)
    scores = {f"accuracy/{k}": sum(v) / len(v) for k, v in right.items() if v}
    scores["accuracy"] = sum(sum(v) for v in right.values()) / size
    scores["closed_traces"] = closed / size
    scores["completion_tokens"] = sum(tokens for _, tokens in answers) / size
    return scores


def train(cfg: SFTConfig) -> Path:
    rank, world = distributed()
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    cfg.out.mkdir(parents=True, exist_ok=True)
    prompter = make_tokenizer(cfg.out / "model")
    torch.manual_seed(cfg.seed)
    model = new_model(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
    )
    start = 0
    book = Bookkeeping(cfg.out, rank, cfg.steps, cfg.minutes, cfg.eval_every, cfg.checkpoint_every)
    if cfg.resume and book.checkpoint.is_file():
        state = torch.load(book.checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=rank != 0, desc="sft")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        rng = random.Random(f"{cfg.seed}-{step}-{rank}")
        tokens, mask, images = collate(
            batch(prompter, rng, cfg.batch_size, cfg.reasoning_prompt_share, cfg.kinds)
        )
        loss, token_loss, accuracy = loss_of(
            model,
            tokens.to(device),
            mask.to(device),
            [i.to(device) for i in images],
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        record = {
            "step": step + 1,
            "loss": round(token_loss.item(), 4),
            "token_accuracy": round(accuracy, 4),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": book.elapsed(),
        }
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{accuracy:.2f}")
        if book.end_step(step, record, bar, model, optimizer, cfg,
                         lambda: evaluate(model, prompter, cfg.eval_size, cfg.seed)):
            break
    book.close()
    if rank == 0:
        save_consolidated(model.cpu(), cfg.out / "model")
        plot(cfg.out / "log.jsonl", cfg.out / "sft.png")
    return cfg.out / "model"


def plot(log_path: Path, image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8)
    left.set(title="target-token loss", xlabel="step", yscale="log")
    right.plot([r["step"] for r in records], [r["token_accuracy"] for r in records], lw=0.8, label="tokens")
    evals = [r for r in records if "accuracy" in r]
    right.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="answers (held out)")
    right.set(title="accuracy", xlabel="step", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(image, dpi=100)
    plt.close(fig)
