#!/usr/bin/env bash
# Issue 31 §2: does GRPO (`dapo`, configs/chain/grpo.toml) improve models/chain-policy within
# 300 steps, and at which learning rate? README.md here gives the numbers.
# 1. The search, seed 1. 3e-4 and 1e-4 were stopped by hand once their trend was clear (3e-4:
#    training reward 0.56 -> 0.02 by step 38; 1e-4: validation 0.524 -> 0.504 at step 100, still
#    falling at 136). The learning rate is constant after 5 warmup steps, so max_steps only
#    truncates those runs (each ends with one more validation pass than the stopped ones had).
# 2. Seeds 1-3 at the picked rate, 3e-5 (= configs/chain/*.toml), 300 steps: report.md.
# 3. Final checkpoints under `grpo eval -n 8 -t 1` on validation and a held-out split: eval/.
# Runs are deterministic (one thread each); re-running skips finished sweep runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
grpo=${GRPO:-target/release/grpo}
out=results/chain-lr
for probe in 3e-4:38 1e-4:136; do
    lr=${probe%:*} steps=${probe#*:}
    [ -f $out/probe-$lr/summary.json ] || $grpo --threads 1 train --config configs/chain/grpo.toml \
        --set optim.learning_rate=$lr --set train.seed=1 --set train.max_steps=$steps \
        --set output.dir=$out/probe-$lr
done
$grpo --threads 2 sweep -c configs/chain/grpo.toml --seeds 1,2,3 \
    --grid optim.learning_rate=3e-5 --out $out --jobs 2
mkdir -p $out/eval
for s in 1 2 3; do
    for split in validation heldout; do
        data=data/arith-chain/validation.jsonl
        [ $split = heldout ] && data=data/arith-chain-heldout/validation.jsonl
        $grpo --threads 2 eval --model $out/runs/grpo_learning_rate3e-5-seed$s/checkpoint-300 \
            --data $data -n 8 -t 1 --top-p 1 --k 1,8 --prompt-template '{question}' \
            | tail -2 > $out/eval/seed$s-$split.txt
    done
done
$grpo plot $out/runs/*/ $out/probe-1e-4 $out/probe-3e-4 --separate \
    --metrics reward,eval/accuracy,entropy --smooth 10 --out $out/search-curves.png
