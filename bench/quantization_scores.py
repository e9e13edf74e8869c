"""Quantisation quality by task scores: the same MMLU items through the API, served from the
fp32 weights (`--quantize none`) and from the default int4 serving weights, side by side.

    python bench/quantization_scores.py [--limit 400] [--tasks mmlu,mmlu_cloze]

mmlu: the letter the model answers (generated, temperature 0); mmlu_cloze: each choice's
log-likelihood (no generation). Items spread over subjects the same way for both servers.
Prints accuracy per task and mode, and int4 − fp32 in points.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server, stop_server  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def scores(quantize: str, tasks: str, limit: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"quant-{quantize}-"))
    server = start_server(tmp, "--no-embedding-model", "--quantize", quantize)
    try:
        subprocess.run([sys.executable, "-m", "magistral.cli", "eval", tasks,
                        "--model", "magistral-medium-latest", "--base-url", server.base_url,
                        "--api-key", server.key, "--data-dir", str(DATA),
                        "--limit", str(limit), "--no-progress", "--out", str(tmp / "eval")], check=True)
    finally:
        stop_server(server)
    report = json.loads((tmp / "eval" / "report.json").read_text())
    return {t["task"]: t["accuracy"] for t in report["tasks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--tasks", default="mmlu,mmlu_cloze")
    args = parser.parse_args()
    fp32 = scores("none", args.tasks, args.limit)
    int4 = scores("auto", args.tasks, args.limit)
    print(f"{'task':<12} {'fp32':>8} {'int4':>8} {'int4 - fp32 (points)':>22}   ({args.limit} items)")
    for task in fp32:
        gap = 100 * (int4[task] - fp32[task])
        print(f"{task:<12} {100 * fp32[task]:>7.1f}% {100 * int4[task]:>7.1f}% {gap:>+22.1f}")


if __name__ == "__main__":
    main()
