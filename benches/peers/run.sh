#!/usr/bin/env bash
# Every speed ratio of grpo against its Python peers, measured back to back in one run:
#   benches/peers/run.sh [--long]
# Builds grpo (release), sets up the peer venv (setup.sh), then prints one JSON line per case:
# train (grpo bench train vs PyTorch, train.py), GEMM f32/bf16 (gemm.py), then generate and TRL
# (compare.py) when present.
# Threads: PEER_THREADS (default 2) on both sides. Run it on an otherwise idle machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
V=${PEER_VENV:-$ROOT/.venv-peer}
T=${PEER_THREADS:-2}
(cd "$ROOT" && cargo build --release -q)
if [ -f "$HERE/setup.sh" ]; then bash "$HERE/setup.sh" "$V" >&2; fi
PY="$V/bin/python"
[ -x "$PY" ] || { echo "no Python peer venv at $V (set PEER_VENV or run benches/peers/setup.sh)" >&2; exit 2; }
echo "# train: grpo bench train vs torch_train_step.py (ratio = grpo tokens/s / PyTorch tokens/s)" >&2
"$PY" "$HERE/train.py" --threads "$T" "$@"
echo "# gemm: grpo bench gemm vs torch_gemm.py, f32 and bf16 (ratio = grpo GFLOP/s / PyTorch GFLOP/s)" >&2
"$PY" "$HERE/gemm.py" --threads "$T"
if [ -f "$HERE/compare.py" ]; then
  "$PY" "$HERE/compare.py" generate trl --threads "$T"
fi
