"""The paper's toy task with a *tabular* policy: one logit per internal node of the depth-4
L/R tree (15 in all), no shared parameters. Same sampling (G = 16, 250 steps), advantages
((r - mean) / (std + 1e-4), sample std), loss (dapo normaliser, mu = 1), |lambda| weighting,
global-norm clipping at 1.0 and optimizers (Adam as torch / plain SGD) as `grpo train` on
configs/tree/*.toml, so it isolates what the transformer adds. Standard library only:

    python3 results/tree-why/tabular_sim.py > results/tree-why/tabular.md

Prints the fraction of target paths among the samples of the last 50 steps, mean over seeds.
"""
import itertools
import math
import random

TARGET = "LRRL"
NODES = ["".join(p) for d in range(4) for p in itertools.product("LR", repeat=d)]


def reward(path, n, r_neg):
    if path == TARGET:
        return 1.0
    if path[:n] == TARGET[:n]:
        return r_neg
    return 0.7


def run(seed, lam, n, r_neg, lr, opt, G=16, steps=250, clip=1.0):
    rng = random.Random(seed)
    th = dict.fromkeys(NODES, 0.0)  # logit of R at each node: uniform start
    m = dict.fromkeys(NODES, 0.0)
    v = dict.fromkeys(NODES, 0.0)
    hits = []
    for step in range(1, steps + 1):
        paths = []
        for _ in range(G):
            p = ""
            for _ in range(4):
                p += "R" if rng.random() < 1 / (1 + math.exp(-th[p])) else "L"
            paths.append(p)
        rs = [reward(p, n, r_neg) for p in paths]
        mu = sum(rs) / G
        sd = math.sqrt(sum((r - mu) ** 2 for r in rs) / (G - 1))
        adv = [(r - mu) / (sd + 1e-4) for r in rs]
        g = dict.fromkeys(NODES, 0.0)
        for p, a in zip(paths, adv):
            for t in range(4):
                s = p[:t]
                size = sum(q[: t + 1] == p[: t + 1] for q in paths) if lam else 1
                dlogp = (p[t] == "R") - 1 / (1 + math.exp(-th[s]))
                g[s] -= a / size * dlogp / (G * 4)
        norm = math.sqrt(sum(x * x for x in g.values()))
        if norm > clip:
            g = {s: x * clip / norm for s, x in g.items()}
        for s in NODES:
            if opt == "sgd":
                th[s] -= lr * g[s]
            else:
                m[s] = 0.9 * m[s] + 0.1 * g[s]
                v[s] = 0.999 * v[s] + 0.001 * g[s] ** 2
                mh, vh = m[s] / (1 - 0.9**step), v[s] / (1 - 0.999**step)
                th[s] -= lr * mh / (math.sqrt(vh) + 1e-8)
        hits.append(sum(p == TARGET for p in paths) / G)
    return sum(hits[-50:]) / 50


if __name__ == "__main__":
    seeds = range(10)
    settings = [(n, r) for n in (1, 2) for r in (-0.5, -1.0, -1.5)]
    runs = [("sgd", 3.0), ("sgd", 10.0), ("adam", 0.03), ("adam", 0.1)]
    print("| n | r_neg | " + " | ".join(f"{o} lr {lr}: GRPO → λ-GRPO" for o, lr in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for n, r_neg in settings:
        cells = []
        for opt, lr in runs:
            grpo = sum(run(s, False, n, r_neg, lr, opt) for s in seeds) / len(seeds)
            lam = sum(run(s, True, n, r_neg, lr, opt) for s in seeds) / len(seeds)
            cells.append(f"{grpo:.2f} → {lam:.2f}")
        print(f"| {n} | {r_neg} | " + " | ".join(cells) + " |", flush=True)
