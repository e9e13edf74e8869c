from __future__ import annotations

from pathlib import Path

import pytest

from magistral.train.sft import SFTConfig, train


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-step SFT smoke run: the format half learned, the charts not read."""
    out = tmp_path_factory.mktemp("sft")
    train(SFTConfig(out=out, steps=24, batch_size=4, warmup=4, lr=3e-3, eval_every=0, checkpoint_every=12,
                    minutes=None))
    return out
