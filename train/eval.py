#!/usr/bin/env python3
"""Accuracy and generated tokens of one configuration, measured through `edge-reason`
itself (the same INT4 weights and runtime the browser uses).

    python3 train/eval.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data train/data/math_test.jsonl [--adapter DIR] [--mode reason|chat] \\
        [--n 1] [--budget 128] [--limit 50]

Each problem is one `edge-reason reason --json` request; a problem counts as right when
the vote's answer key equals the normalized reference answer (the runtime's own
normalization, reported in the `vote` event). Prints one JSON summary line: accuracy,
mean generated tokens, and the same for held-out templates.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(args, prompt):
    cmd = [
        str(args.bin), "reason", "--model", args.model, "--backend", args.backend, "--json",
        "--mode", args.mode, "--n", str(args.n), "--budget", str(args.budget),
        "--answer-tokens", str(args.answer_tokens), "--max-tokens", str(args.max_tokens),
        "--temperature", str(args.temperature), "--seed", str(args.seed), "--prompt", prompt,
    ]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"edge-reason failed: {out.stderr.strip()}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    vote = next(e for e in events if e["type"] == "vote")
    done = next(e for e in events if e["type"] == "done")
    return vote["answer"], done["stats"]["tokens"]


def normalize(answer):
    """The runtime's key for a reference answer: integers are their own canonical form;
    text answers are case-folded (as `reason::normalize` does)."""
    return str(int(answer)) if answer.lstrip("-").isdigit() else answer.strip().lower()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--mode", default="reason", choices=["reason", "chat"])
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "edge-reason")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.data)]
    if args.limit:
        rows = rows[: args.limit]
    stats = {"all": [0, 0, 0], "held_out": [0, 0, 0]}
    for r in rows:
        got, tokens = run_one(args, r["prompt"])
        right = got is not None and got == normalize(r["answer"])
        for k in ["all"] + (["held_out"] if r["held_out"] else []):
            stats[k][0] += 1
            stats[k][1] += right
            stats[k][2] += tokens
        print(json.dumps({"id": r["id"], "answer": r["answer"], "got": got, "right": right, "tokens": tokens}), file=sys.stderr)
    summary = {k: {"problems": n, "accuracy": round(ok / n, 4) if n else None, "mean_tokens": round(t / n, 1) if n else None}
               for k, (n, ok, t) in stats.items()}
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k not in ("bin",)}, **summary}, default=str))


if __name__ == "__main__":
    main()
