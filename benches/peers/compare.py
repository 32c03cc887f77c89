"""grpo against its Python peers, back to back on one machine, one JSON line per comparison.
  python compare.py [generate] [trl] [--grpo PATH] [--threads N] [--models DIR] [--steps N]
generate: `grpo generate` vs transformers `generate` (hf_generate.py) on random Qwen2 checkpoints
  made by make_models.py: sampled 64x128 on a 12.6M model (hidden 384) and greedy 8x32 on the
  Qwen2.5-0.5B architecture. EOS is ignored on both sides. transformers is timed around
  `generate` only; grpo around the whole process (start-up, model load, tokenizer included), and
  its in-process figure is printed beside it. ratio = grpo tokens/s (whole process) / transformers
  tokens/s; ratio_after_load = grpo's in-process tokens/s / transformers tokens/s (like for like).
  --dtypes f32,bf16 runs each case in each dtype: bf16 = `grpo generate --dtype bf16` against
  transformers with the weights loaded in bfloat16.
trl: median `step_time_s` of `grpo train --config configs/grpo.toml` (steps 2..N) vs the median step
  time of TRL's GRPOTrainer on the same task (trl_step.py). ratio = grpo / TRL (lower is faster).
Both sides use the same number of threads (default 2)."""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROMPT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
          "in May. How many clips did Natalia sell altogether in April and May?")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def sh_rss(cmd, **kw):
    """Runs cmd; returns (stdout, peak RSS of that process in GB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kw)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0); err.seek(0)
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, cmd, out.read(), err.read())
        return out.read(), usage.ru_maxrss / 1e6


def last_json(out):
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def emit(d):
    print(json.dumps(d), flush=True)


def generate(a):
    os.makedirs(a.models, exist_ok=True)
    cases = [(s, m, r, n, d) for d in a.dtypes.split(",")
             for s, m, r, n in [("small", "sample", 64, 128), ("qwen2.5-0.5b", "greedy", 8, 32)]]
    made = set()
    for shape, mode, rows, new, dtype in cases:
        model = os.path.join(a.models, shape)
        if shape not in made:
            sh([sys.executable, os.path.join(HERE, "make_models.py"), os.path.join(ROOT, "models/tiny-math"), model,
                shape])
            made.add(shape)
        peer = last_json(sh([sys.executable, os.path.join(HERE, "hf_generate.py"), model, PROMPT, str(rows), str(new),
                             mode, str(a.threads), "bfloat16" if dtype == "bf16" else "float32"]).stdout)
        sampling = ["--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0"] if mode == "sample" \
            else ["--temperature", "0"]
        cmd = [a.grpo, "--threads", str(a.threads), "generate", "--model", model, "--prompt", PROMPT,
               "--no-chat-template", "-n", str(rows), "--max-new-tokens", str(new), "--ignore-eos", "--json",
               "--dtype", dtype] + sampling
        t = time.perf_counter()
        r = sh(cmd)
        wall = time.perf_counter() - t
        tokens = sum(len(json.loads(l)["token_ids"]) for l in r.stdout.splitlines() if l.startswith("{"))
        m = re.search(r"\(([0-9.]+) tok/s\)", r.stderr)
        emit({"work": f"generate {mode} {rows}x{new}, {shape}, {dtype}", "peer": peer["peer"],
              "peer_tokens_per_s": round(peer["tokens_per_s"], 1),
              "grpo_tokens_per_s": round(tokens / wall, 1),
              "grpo_tokens_per_s_after_load": float(m.group(1)) if m else None,
              "ratio": round(tokens / wall / peer["tokens_per_s"], 2),
              "ratio_after_load": round(float(m.group(1)) / peer["tokens_per_s"], 2) if m else None,
              "command": " ".join(cmd[:5] + ["MODEL"] + cmd[6:7] + ["PROMPT"] + cmd[8:])})


def trl(a):
    peer_out, peer_rss = sh_rss([sys.executable, os.path.join(HERE, "trl_step.py"), ROOT, str(a.steps), str(a.threads)],
                                cwd=tempfile.gettempdir())
    peer = last_json(peer_out)
    with tempfile.TemporaryDirectory() as out:
        cmd = [a.grpo, "--threads", str(a.threads), "train", "--config", "configs/grpo.toml",
               "--set", f"train.max_steps={a.steps}", "--set", f"output.dir={out}/run", "--set", "eval.limit=1",
               "--set", f"train.save_steps={a.steps}"]
        _, ours_rss = sh_rss(cmd, cwd=ROOT)
        times = [json.loads(l)["step_time_s"] for l in open(f"{out}/run/metrics.jsonl") if l.strip()]
    ours = statistics.median(times[1:] or times)
    emit({"work": "GRPO step, shipped task (G=8, 8 prompts, 64 new tokens)", "peer": peer["peer"],
          "peer_median_step_s": round(peer["median_step_s"], 3), "grpo_median_step_s": round(ours, 3),
          "ratio": round(ours / peer["median_step_s"], 2), "goal": "<= 0.5",
          "peer_peak_rss_gb": round(peer_rss, 2), "grpo_peak_rss_gb": round(ours_rss, 2),
          "command": "grpo --threads %d train --config configs/grpo.toml --set train.max_steps=%d" % (a.threads, a.steps)})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", default=["generate", "trl"], choices=["generate", "trl"])
    p.add_argument("--grpo", default=os.path.join(ROOT, "target/release/grpo"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=os.path.join(tempfile.gettempdir(), "grpo-peer-models"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtypes", default="f32", help="generate: comma-separated f32, bf16")
    a = p.parse_args()
    for w in a.what:
        {"generate": generate, "trl": trl}[w](a)
