"""`grpo bench train` against PyTorch (torch_train_step.py), back to back on one machine, one JSON
line per comparison: tokens/s ratio (grpo / PyTorch, higher is faster) and both peak RSS.
  python train.py [--grpo PATH] [--threads N] [--repeat N] [--shapes bench,qwen2.5-0.5b] [--long]
                  [--dtypes f32,bf16]
Cases: bench 8x256 and qwen2.5-0.5b 8x72, each forward only, fwd+bwd and fwd+bwd+AdamW, in each
dtype: f32, and bf16 = `grpo bench train --dtype bf16` against `torch_train_step.py --bf16`
(torch.autocast bf16; both keep f32 weights and AdamW).
--long adds qwen2.5-0.5b 8x700 fwd+bwd+AdamW (grpo must stay <= 16 GB; PyTorch needs far more,
so its side is skipped unless --long-peer). One process at a time: the 0.5B cases need 10-14 GB."""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def last_json(out):
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return last_json(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpo", default=os.path.join(ROOT, "target/release/grpo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default="bench,qwen2.5-0.5b")
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--long-peer", action="store_true")
    ap.add_argument("--dtypes", default="f32", help="comma-separated: f32, bf16")
    a = ap.parse_args()
    cases = []
    for dtype in a.dtypes.split(","):
        for shape in a.shapes.split(","):
            seq = 256 if shape == "bench" else 72
            for mode in (["--forward-only"], [], ["--adamw"]):
                cases.append((shape, 8, seq, mode, True, dtype))
        if a.long:
            cases.append(("qwen2.5-0.5b", 8, 700, ["--adamw"], a.long_peer, dtype))
    for shape, batch, seq, mode, with_peer, dtype in cases:
        args = ["--shape", shape, "--batch", str(batch), "--seq", str(seq), "--repeat", str(a.repeat)] + mode
        peer_args = ["--bf16"] if dtype == "bf16" else []
        peer = run([sys.executable, os.path.join(HERE, "torch_train_step.py"), "--threads", str(a.threads)]
                   + args + peer_args) if with_peer else None
        cmd = [a.grpo, "--threads", str(a.threads), "bench", "train"] + args + ["--dtype", dtype, "--json"]
        mine = run(cmd)
        row = {"work": f"{mine['what']} {shape} {batch}x{seq} {dtype}", "tier": mine.get("tier"),
               "grpo_tokens_per_s": round(mine["tokens_per_s"], 1),
               "grpo_peak_rss_gb": round(mine["peak_rss_gb"], 2),
               "command": "grpo " + " ".join(cmd[1:])}
        if peer:
            row.update({"peer": peer["peer"], "peer_tokens_per_s": round(peer["tokens_per_s"], 1),
                        "peer_peak_rss_gb": round(peer["peak_rss_gb"], 2),
                        "ratio": round(mine["tokens_per_s"] / peer["tokens_per_s"], 2)})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
