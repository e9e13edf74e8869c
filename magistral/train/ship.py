"""Ship a trained magistral-mini: its weights in bf16 (half the bytes; served in fp32) with its
params.json and tekken.json, into the package folder that `magistral serve` serves by default
beside SmolLM2, and a card with the figures it was shipped with.

    magistral train ship runs/mini-grpo/model [--card runs/mini-grpo/comparison.md]
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "magistral-mini"
MAX_BYTES = 50 * 2**20  # the repository's budget for shipped weights


def ship(model: Path, card: Path | None = None, to: Path = SHIPPED) -> Path:
    """Copy `model` (a Mistral-format folder) into `to` with bf16 tensors."""
    tensors = load_file(model / "consolidated.safetensors")
    halves = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    files = [model / "params.json", model / "tekken.json", *([card] if card else [])]
    size = sum(t.numel() * 2 for t in halves.values()) + sum(f.stat().st_size for f in files)
    if size > MAX_BYTES:  # checked before writing: nothing half-shipped is left behind
        raise ValueError(f"{model} would take {size / 2**20:.1f} MiB, over the "
                         f"{MAX_BYTES / 2**20:.0f} MiB budget")
    to.mkdir(parents=True, exist_ok=True)
    save_file(halves, to / "consolidated.safetensors")
    for f in files:
        shutil.copy(f, to / ("CARD.md" if f == card else f.name))
    return to
