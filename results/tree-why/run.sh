#!/usr/bin/env bash
# The probes behind results/tree-why/README.md: why the paper's toy result does not reproduce
# on our tiny models. Each is one `grpo sweep`; re-running skips finished runs and rewrites the
# reports. About an hour on one core.
set -euo pipefail
cd "$(dirname "$0")/../.."
grpo=${GRPO:-target/release/grpo}
tree=(-c configs/tree/lambda.toml -c configs/tree/grpo.toml --seeds 1,2,3)

# 1. A near-uniform start (init std 0.002 instead of 0.02), Adam at two learning rates.
$grpo sweep "${tree[@]}" --set model.path=models/tiny-tree-uniform \
    --grid optim.learning_rate=1e-3,1e-4 --grid rewards.tree_r_neg=-0.5,-1 \
    --out results/tree-why/uniform-adam
# 2. Plain SGD, where the 1/|λ| factor is not normalised away per parameter as in Adam.
$grpo sweep "${tree[@]}" --set model.path=models/tiny-tree-uniform --set optim.optim=sgd \
    --grid optim.learning_rate=0.003,0.01,0.03 --out results/tree-why/uniform-sgd
# 3. Untied input/output embeddings: pushing `R` up at the first move no longer pushes up the
#    shared `R` output vector at every later move.
$grpo sweep "${tree[@]}" --set model.path=models/tiny-tree-untied \
    --grid optim.learning_rate=1e-4,3e-4 --out results/tree-why/untied-adam
# 4. Group size: more samples per group find the target more often, but |λ| grows with G.
$grpo sweep "${tree[@]}" --set model.path=models/tiny-tree-uniform --set optim.learning_rate=1e-4 \
    --grid sampling.num_generations=8,32 --out results/tree-why/group-size
# 5. Longer training: 1000 steps instead of the paper's 250 (uniform model, Adam 1e-4), 5 seeds,
#    n = 1 and n = 2 (r_neg = -1).
long=(-c configs/tree/lambda.toml -c configs/tree/grpo.toml --seeds 1,2,3,4,5
      --set model.path=models/tiny-tree-uniform --set optim.learning_rate=1e-4 --set train.max_steps=1000)
$grpo sweep "${long[@]}" --out results/tree-why/long-run
$grpo sweep "${long[@]}" --set rewards.tree_n=2 --out results/tree-why/long-run-n2
# 6. The rest of the paper's table at 1000 steps: r_neg = -0.5 and -1.5, n = 1 and 2.
$grpo sweep "${long[@]}" --grid rewards.tree_r_neg=-0.5,-1.5 --out results/tree-why/long-run-rneg
$grpo sweep "${long[@]}" --grid rewards.tree_r_neg=-0.5,-1.5 --set rewards.tree_n=2 \
    --out results/tree-why/long-run-rneg-n2
