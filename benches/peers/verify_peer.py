#!/usr/bin/env python3
"""math-verify's speed on the pairs `cargo bench --bench verify` writes (its peer timing).

Usage: verify_peer.py PAIRS.jsonl   (lines {"gold": ..., "pred": ...})
Prints one JSON line: {"pairs": N, "seconds": S, "pairs_per_s": R, "correct": C}, timing
`verify(parse(gold), parse(pred))` with math-verify's defaults on one core, as grpo's
one-core figure does. The first pass warms sympy/ANTLR caches; the second is timed.
"""
import json
import sys
import time

from math_verify import parse, verify


def main():
    pairs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    for p in pairs[:50]:
        verify(parse(p["gold"]), parse(p["pred"]))
    t = time.perf_counter()
    correct = sum(bool(verify(parse(p["gold"]), parse(p["pred"]))) for p in pairs)
    s = time.perf_counter() - t
    print(json.dumps({"pairs": len(pairs), "seconds": s, "pairs_per_s": len(pairs) / s, "correct": correct}))


if __name__ == "__main__":
    main()
