#!/usr/bin/env bash
# Issue 31 §3: λ-GRPO vs GRPO (`dapo`, token-total normaliser) vs `grpo` (per-sequence
# normaliser) on the arith-chain task with models/chain-policy, in the paper's Table 2 settings:
# β ∈ {0, 0.04} (KL to the initial policy), μ = 1 (loss.num_iterations), 5 seeds, 300 steps, at
# the learning rate of configs/chain/*.toml (picked in results/chain-lr/). 30 runs.
# Resumable: a run with summary.json and metrics.jsonl is skipped, so an interrupted sweep
# continues where it stopped; re-running a finished sweep only rewrites the report and figures.
# Two one-thread runs at a time (JOBS=2, the default; JOBS=1 THREADS=1 leaves a core free). Writes report.{md,json}, curves.{png,svg} and
# structure-curves.png (mean path depth and intermediate proportion over training, per loss
# and β: the paper's Figure) here.
set -euo pipefail
cd "$(dirname "$0")/../.."
grpo=${GRPO:-target/release/grpo}
out=results/chain
# Issue 22's runs (models/tiny-chain, learning-rate grid) are replaced, not mixed in.
rm -rf $out/runs/*_learning_rate*
# Seed by seed (seeds 1, then 1–2, …, 1–5), so that a sweep stopped part-way leaves every
# loss × β cell with the same seeds and a report of those paired seeds.
seeds=""
for s in 1 2 3 4 5; do
    seeds="${seeds:+$seeds,}$s"
    $grpo --threads ${THREADS:-2} sweep -c configs/chain/lambda.toml -c configs/chain/grpo.toml \
        -c configs/chain/grpo-seq.toml --seeds $seeds --grid loss.beta=0,0.04 \
        --set loss.num_iterations=1 --out $out --jobs ${JOBS:-2}
done
$grpo plot $out/runs/*/ --metrics mean_path_depth,mean_intermediate_proportion --smooth 10 \
    --out $out/structure-curves.png
