#!/usr/bin/env bash
# Issue 31 §2: does GRPO (`dapo`, configs/chain/grpo.toml) improve models/chain-policy, and at
# which learning rate? Step 1: one seed at four learning rates, 300 steps each (the search,
# report kept as search.md). Step 2: seeds 1-3 at the picked rate (seed 1 is reused from step 1;
# the sweep skips finished runs), report.md = the 3-seed result. Two one-thread runs at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
grpo=${GRPO:-target/release/grpo}
out=results/chain-lr
$grpo --threads 2 sweep -c configs/chain/grpo.toml --seeds 1 \
    --grid optim.learning_rate=1e-5,3e-5,1e-4,3e-4 --out $out --jobs 2
cp $out/report.md $out/search.md
cp $out/report.json $out/search.json
cp $out/curves.png $out/search-curves.png
lr=${LR:-}
[ -n "$lr" ] || exit 0   # pick the rate from search.md, then: LR=... results/chain-lr/run.sh
$grpo --threads 2 sweep -c configs/chain/grpo.toml --seeds 1,2,3 \
    --grid optim.learning_rate=$lr --out $out --jobs 2
