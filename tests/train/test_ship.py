"""`magistral train ship`: a trained model goes into the package in bf16 (half the bytes), loads
back in fp32 with the same greedy behaviour, and a folder over the size budget is refused."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from magistral.chat.mistral_prompt import MistralPrompter
from magistral.model.checkpoints import load_consolidated
from magistral.train import ship as shipping
from magistral.train.data import user_message
from magistral.train.tasks.charts import example


def test_shipped_weights_are_half_the_bytes_and_load_back(sft_run: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("| checkpoint | accuracy |\n")
    shipped = shipping.ship(sft_run / "model", card, to=tmp_path / "magistral-mini")
    assert {p.name for p in shipped.iterdir()} == {"consolidated.safetensors", "params.json", "tekken.json",
                                                    "CARD.md"}
    original = (sft_run / "model" / "consolidated.safetensors").stat().st_size
    assert (shipped / "consolidated.safetensors").stat().st_size < 0.55 * original
    with safe_open(shipped / "consolidated.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}

    fp32, _ = load_consolidated(sft_run / "model")
    bf16, _ = load_consolidated(shipped)
    assert next(bf16.parameters()).dtype == torch.float32  # served in fp32
    prompter = MistralPrompter(shipped / "tekken.json", bf16.args.vision)
    prompt = prompter.encode(user_message(example(random.Random(2))), reasoning_prompt=False)
    ids = torch.tensor([prompt.ids])
    with torch.no_grad():
        a = fp32(None, embeddings=fp32.embed(ids, prompt.images))[0, -1]
        b = bf16(None, embeddings=bf16.embed(ids, prompt.images))[0, -1]
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_a_model_over_the_budget_is_refused(sft_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shipping, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="budget"):
        shipping.ship(sft_run / "model", to=tmp_path / "too-big")
