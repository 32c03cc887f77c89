"""`grpo bench gemm` against PyTorch's matmul (torch_gemm.py: MKL for float32, oneDNN for bfloat16),
back to back on one machine, one JSON line per shape and dtype: GFLOP/s ratio (grpo / PyTorch,
higher is faster) and the bf16 tier grpo used (amx, avx512-bf16 or f32).
  python gemm.py [--grpo PATH] [--threads N] [--dtypes float32,bfloat16] [--shapes step|headline]
Shapes (`step`): every GEMM of a Qwen2.5-0.5B training step at 8x72 = 576 tokens (hidden 896,
stacked q/k/v 1152, stacked gate/up 9728, intermediate 4864, vocab 151936): forward x.W^T,
backward dX = dY.W and dW = dY^T.X, as C[m x n] = A[m x k].B[k x n] with both operands stored
row-major on both sides (PyTorch's `x @ w`). `headline`: 576x4864x896 only."""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
T, H, QKV, GU, I, V = 576, 896, 1152, 9728, 4864, 151936
STEP = [  # (what, m, n, k)
    ("fwd q/k/v", T, QKV, H), ("fwd o", T, H, H), ("fwd gate/up", T, GU, H), ("fwd down", T, H, I),
    ("fwd lm head", T, V, H),
    ("dX q/k/v", T, H, QKV), ("dX gate/up", T, H, GU), ("dX down", T, I, H), ("dX lm head", T, H, V),
    ("dW q/k/v", QKV, H, T), ("dW o", H, H, T), ("dW gate/up", GU, H, T), ("dW down", H, I, T),
    ("dW lm head", V, H, T),
]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpo", default=os.path.join(ROOT, "target/release/grpo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--shapes", default="step", choices=["step", "headline"])
    a = ap.parse_args()
    shapes = STEP if a.shapes == "step" else [("dX down (headline)", T, I, H)]
    for what, m, n, k in shapes:
        # Best of about 1 s of runs on both sides (at least 3: the lm head is ~157 GFLOP); a
        # product of a few ms needs many runs for its best to be a quiet one on a shared VM.
        rep = max(3, min(200, int(4e11 / (2 * m * n * k))))
        for dt in a.dtypes.split(","):
            peer = run([sys.executable, os.path.join(HERE, "torch_gemm.py"), "--m", str(m), "--n", str(n),
                        "--k", str(k), "--dtype", dt, "--threads", str(a.threads), "--repeat", str(rep)])
            ours_dt = {"float32": "f32", "bfloat16": "bf16"}[dt]
            cmd = [a.grpo, "--threads", str(a.threads), "bench", "gemm", "--m", str(m), "--n", str(n),
                   "--k", str(k), "--dtype", ours_dt, "--repeat", str(rep), "--json"]
            mine = run(cmd)
            print(json.dumps({"work": f"GEMM {what} {m}x{n}x{k}", "dtype": ours_dt, "tier": mine["tier"],
                              "peer": peer["peer"], "peer_gflops": round(peer["gflops"], 1),
                              "grpo_gflops": round(mine["gflops"], 1),
                              "ratio": round(mine["gflops"] / peer["gflops"], 2),
                              "command": "grpo " + " ".join(cmd[1:])}), flush=True)


if __name__ == "__main__":
    main()
