#!/usr/bin/env python3
"""Where rollout groups part ways: the split-depth half of results/chain/structure/README.md.

`grpo analyze` gives each group's process sets (non-trivial groups, path depth, intermediate
proportion, |λ| histogram). This script adds where the completions of a group diverge, in tokens
and in worked-solution steps (a step ends with the `.` token of `a op b = c.`), read straight
from the rollout dumps (`train.save_rollouts = true`). Standard library only.

    python3 results/chain/structure/splits.py TOKENIZER_JSON ROLLOUT_DIR [ROLLOUT_DIR ...]

Per group: the first split (the end of the longest prefix shared by all G completions) and every
branch point of the prefix tree. For each wrong completion in a group that also has a right one:
its longest common prefix with any right completion (how many steps a failure shares with a
success before it goes wrong: the steps λ-GRPO reweights).
"""
import gzip
import json
import os
import statistics
import sys


def read_groups(run_dir):
    """Groups of every step-N.jsonl[.gz] in `run_dir` or its rollouts/ folder, by step."""
    d = os.path.join(run_dir, "rollouts")
    d = d if os.path.isdir(d) else run_dir
    names = [n for n in os.listdir(d) if n.startswith("step-") and ".jsonl" in n]
    for name in sorted(names, key=lambda n: int(n.split("-")[1].split(".")[0])):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(os.path.join(d, name), "rt") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def lcp(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def branch_points(seqs, members, pos, out):
    """Appends (position, members) for every node of the prefix tree that branches."""
    while True:
        if len(members) < 2:
            return
        heads = {}
        for m in members:
            tok = seqs[m][pos] if pos < len(seqs[m]) else None
            heads.setdefault(tok, []).append(m)
        if len(heads) == 1 and None not in heads:
            pos += 1
            continue
        out.append((pos, list(members)))
        for tok, sub in heads.items():
            if tok is not None:
                branch_points(seqs, sub, pos + 1, out)
        return


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summarise(run_dir, dot):
    first_tok, first_step, frac_zero = [], [], []
    all_steps, lcp_tok, lcp_step, lcp_frac = [], [], [], []
    mixed = groups = 0
    for g in read_groups(run_dir):
        seqs = [c["token_ids"] for c in g["completions"]]
        rewards = [c["reward"] for c in g["completions"]]
        groups += 1
        pts = []
        branch_points(seqs, list(range(len(seqs))), 0, pts)
        if pts:
            p0 = pts[0][0]
            first_tok.append(p0)
            first_step.append(seqs[pts[0][1][0]][:p0].count(dot))
            frac_zero.append(p0 == 0)
            for p, ms in pts:
                all_steps.append(seqs[ms[0]][:p].count(dot))
        right = [s for s, r in zip(seqs, rewards) if r > 0.5]
        wrong = [s for s, r in zip(seqs, rewards) if r <= 0.5]
        if right and wrong:
            mixed += 1
            for w in wrong:
                n = max(lcp(w, r) for r in right)
                lcp_tok.append(n)
                lcp_step.append(w[:n].count(dot))
                lcp_frac.append(n / max(1, len(w)))
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")
    hist = {}
    for s in first_step:
        hist[min(s, 6)] = hist.get(min(s, 6), 0) + 1
    return {
        "groups": groups,
        "first_split_token_mean": mean(first_tok),
        "first_split_token_median": pct(first_tok, 0.5),
        "first_split_at_token_0": mean(frac_zero),
        "first_split_step_mean": mean(first_step),
        "first_split_step_hist": {str(k) if k < 6 else "6+": v for k, v in sorted(hist.items())},
        "branch_points": len(all_steps),
        "branch_point_step_mean": mean(all_steps),
        "mixed_outcome_groups": mixed / max(1, groups),
        "wrong_vs_right_shared_tokens_mean": mean(lcp_tok),
        "wrong_vs_right_shared_steps_mean": mean(lcp_step),
        "wrong_vs_right_shared_fraction_mean": mean(lcp_frac),
    }


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        dot = json.load(f)["model"]["vocab"]["."]
    report = {run: summarise(run, dot) for run in sys.argv[2:]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
