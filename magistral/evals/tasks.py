"""The task registry used by `magistral eval`."""

from __future__ import annotations

from magistral.evals.gsm8k import GSM8K
from magistral.evals.mmlu import MMLU

TASKS = {"mmlu": MMLU, "mmlu5": lambda: _five_shot(), "gsm8k": GSM8K}


def _five_shot() -> MMLU:
    task = MMLU(shots=5)
    task.name = "mmlu5"
    return task
