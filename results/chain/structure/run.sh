#!/usr/bin/env bash
# Process-set structure of real rollouts: arith-chain (models/tiny-chain) vs the default arith
# task (models/tiny-math), issue 22 §2. 20 λ-GRPO steps of each shipped config (8 prompts × G = 8
# per step, seed 1) with the rollouts dumped; then `grpo analyze` and splits.py on the dumps.
# Re-running regenerates every file here (the runs are deterministic). About 10 CPU-minutes (20 minutes wall on the loaded 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/../../.."
grpo=${GRPO:-target/release/grpo}
out=results/chain/structure
common=(--set train.max_steps=20 --set train.save_rollouts=true --set train.save_steps=0
        --set eval.every=0 --set eval.limit=8 --set eval.n=1)
$grpo --threads 1 train --config configs/lambda.toml "${common[@]}" --set output.dir=runs/structure-arith
$grpo --threads 1 train --config configs/chain/lambda.toml "${common[@]}" --set output.dir=runs/structure-chain
for t in arith chain; do
    rm -rf "$out/$t" && mkdir -p "$out/$t"
    cp runs/structure-$t/rollouts/step-*.jsonl "$out/$t/" && gzip -n "$out/$t"/step-*.jsonl
    $grpo analyze "$out/$t" > "$out/$t/analyze.txt"
    $grpo analyze "$out/$t" --json --brief > "$out/$t/analyze.json"
done
python3 "$out/splits.py" models/tiny-math/tokenizer.json "$out/arith" "$out/chain" > "$out/splits.json"
