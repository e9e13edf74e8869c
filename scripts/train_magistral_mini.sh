#!/usr/bin/env bash
# From nothing to the shipped magistral-mini on this 2-core machine: SFT on generated chart
# questions with reasoning traces, then GRPO from the SFT weights, then ship (bf16, into
# magistral/weights/magistral-mini, which `magistral serve` offers by default). The --minutes
# caps keep the whole run under 3 hours; both stages checkpoint, so `--resume` continues one.
#
#   scripts/train_magistral_mini.sh [RUN_FOLDER]
set -euo pipefail
run=${1:-runs/magistral-mini}
magistral train sft --out "$run/sft" --steps 3200 --batch-size 16 --lr 2e-3 --seed 0 \
    --eval-every 400 --eval-size 48 --minutes 120
magistral train grpo --init "$run/sft/model" --out "$run/grpo" --steps 60 --prompts 8 --group-size 8 \
    --lr 1e-4 --max-tokens 64 --seed 0 --eval-every 60 --eval-size 48 --minutes 30
magistral train ship "$run/grpo/model" --card "$run/grpo/comparison.md"
