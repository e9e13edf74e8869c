"""What every training step of every trainer ends with: an evaluation when one is due, a line in
log.jsonl, a checkpoint when one is due, and whether the run stops here (the last step, or the
`--minutes` budget spent). Only rank 0 evaluates, logs and saves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm


@dataclass
class Bookkeeping:
    out: Path
    rank: int
    steps: int
    minutes: float | None
    eval_every: int
    checkpoint_every: int
    began: float = field(default_factory=time.monotonic)
    log: TextIO | None = None

    def __post_init__(self) -> None:
        self.log = (self.out / "log.jsonl").open("a")

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"

    def elapsed(self) -> float:
        return round(time.monotonic() - self.began, 1)

    def write(self, record: dict[str, Any]) -> None:
        if self.rank == 0 and self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def end_step(self, step: int, record: dict[str, Any], bar: tqdm, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, config: Any,
                 evaluate: Callable[[], dict[str, float]]) -> bool:
        """Step `step` (0-based) is done: evaluate, log and checkpoint as due; True if it was the
        run's last."""
        out_of_time = self.minutes is not None and time.monotonic() - self.began > self.minutes * 60
        last = step + 1 == self.steps or out_of_time
        if self.rank == 0 and self.eval_every and ((step + 1) % self.eval_every == 0 or last):
            record.update(evaluate())
            bar.write(json.dumps(record))
        self.write(record)
        if self.rank == 0 and ((step + 1) % self.checkpoint_every == 0 or last):
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                        "config": {k: str(v) for k, v in asdict(config).items()}}, self.checkpoint)
        return last

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
