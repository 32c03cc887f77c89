#!/usr/bin/env bash
# Issue 22 §3: λ-GRPO vs GRPO (dapo, token-total normaliser) vs grpo (per-sequence normaliser)
# on the arith-chain task, 5 seeds × 2 learning rates, 300 steps each (30 runs). Writes
# results/chain/report.{md,json}, curves and runs/ here; re-running skips finished runs.
# Two runs at a time (--jobs 2), each a one-thread `grpo train` process: about 50 min on an idle
# 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
grpo=${GRPO:-target/release/grpo}
$grpo --threads 2 sweep -c configs/chain/lambda.toml -c configs/chain/grpo.toml \
    -c configs/chain/grpo-seq.toml --seeds 1,2,3,4,5 \
    --grid optim.learning_rate=3e-5,1e-4 --out results/chain --jobs 2
