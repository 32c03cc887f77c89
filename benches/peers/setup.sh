#!/usr/bin/env bash
# The Python peers grpo is measured against, in one CPU-only venv: PyTorch, transformers, TRL,
# datasets, accelerate, math-verify, peft.   Usage: benches/peers/setup.sh [VENV]
# VENV defaults to $PEER_VENV, else .venv-peer in the repository root. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
V=${1:-${PEER_VENV:-$ROOT/.venv-peer}}
if [ -x "$V/bin/python" ] && "$V/bin/python" -c "import torch, transformers, trl, math_verify, peft" 2>/dev/null; then
  echo "$V ready"; exit 0
fi
python3 -m venv "$V"
"$V/bin/pip" install -q --extra-index-url https://download.pytorch.org/whl/cpu \
  torch transformers trl datasets accelerate math-verify peft safetensors tokenizers
"$V/bin/python" -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
