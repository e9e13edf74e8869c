"""The task registry used by `magistral eval`."""

from __future__ import annotations

from magistral.evals.bfcl import BFCL
from magistral.evals.charts import Charts
from magistral.evals.gsm8k import GSM8K
from magistral.evals.humaneval import HumanEval
from magistral.evals.mmlu import MMLU
from magistral.evals.puzzlevqa import PuzzleVQA
from magistral.evals.scienceqa import ScienceQA

TASKS = {"mmlu": MMLU, "mmlu5": lambda: _five_shot(), "humaneval": HumanEval, "gsm8k": GSM8K,
         "scienceqa": ScienceQA, "puzzlevqa": PuzzleVQA, "bfcl": BFCL,
         "charts": Charts}


def _five_shot() -> MMLU:
    task = MMLU(shots=5)
    task.name = "mmlu5"
    return task
