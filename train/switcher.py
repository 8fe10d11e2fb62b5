#!/usr/bin/env python3
"""Trains the switcher head on the runtime's own features and writes it where the
runtime reads it.

    .venv-train/bin/python train/switcher.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data train/data --out www/reasoning/switcher

1. Features: `edge-reason features` on switch_{train,val,test}.jsonl and
   switch_paraphrase_{train,val,test}.jsonl (the chat template, the base prefill in
   chunks of 128, the EMA of the chunk means of the final hidden states: what the
   browser computes before routing). Cached by model and prompt in train/out.
2. Head: d -> 8 -> 1 MLP (ReLU, sigmoid), trained on standardized features with
   Gaussian feature noise (sigma 0.5) and dropout, full batch, Adam; the standardization
   is folded into the first layer on export, so the runtime multiplies raw features.
3. Threshold: the one with the best validation accuracy; among equally accurate ones,
   the highest (fewest prompts sent to reasoning, so fewest generated tokens).
4. Writes switcher.json + switcher.safetensors and prints accuracy on train, val,
   test, the test's held-out template (`follow`, never seen in training) and the
   paraphrase test set (phrasings of no training template).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from eval import stream_into  # noqa: E402
CHUNK, EMA_ALPHA = 128, 0.5


def prompt_key(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:16]


def features(args, files: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(n, d) features, (n,) labels (1 = reason) and the rows of the given data files
    (those that exist). Features are cached by model and prompt in
    train/out/switch_features.<model>.jsonl, appended as they come: only prompts not
    seen before are run."""
    rows = [json.loads(line) for f in files if (args.data / f).exists() for line in (args.data / f).open()]
    cache = args.cache / f"switch_features.{Path(args.model).stem}.jsonl"
    by_key = {}
    if cache.exists():
        for line in cache.open():
            r = json.loads(line)
            by_key[r["id"]] = r["features"]
    todo = {prompt_key(r["prompt"]): r["prompt"] for r in rows if prompt_key(r["prompt"]) not in by_key}
    if todo:
        args.cache.mkdir(parents=True, exist_ok=True)
        inputs = args.cache / "switch_features.prompts.jsonl"
        inputs.write_text("".join(json.dumps({"id": k, "prompt": p}) + "\n" for k, p in todo.items()))
        t = time.time()
        cmd = [
            str(args.bin), "features", "--model", args.model, "--prompts", str(inputs),
            "--chunk", str(CHUNK), "--ema-alpha", str(EMA_ALPHA), "--backend", "cpu", "--threads", str(args.threads),
        ]
        for r in stream_into(cmd, cache, "features"):
            by_key[r["id"]] = r["features"]
        inputs.unlink()
        print(json.dumps({"features": files, "prompts": len(todo), "s": round(time.time() - t, 1)}), flush=True)
    x = np.array([by_key[prompt_key(r["prompt"])] for r in rows], dtype=np.float32)
    y = np.array([1.0 if r["label"] == "reason" else 0.0 for r in rows], dtype=np.float32)
    return x, y, rows


def train_head(x, y, xv, yv, args):
    """The MLP on standardized features; returns (w1, b1, w2, b2) for raw features."""
    import torch

    torch.manual_seed(args.seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(y)
    xvt = torch.from_numpy((xv - mu) / sd)
    yvt = torch.from_numpy(yv)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], args.hidden), torch.nn.ReLU(), torch.nn.Dropout(args.dropout), torch.nn.Linear(args.hidden, 1)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best, best_state = float("inf"), None
    for epoch in range(args.epochs):
        net.train()
        noisy = xt + args.noise * torch.randn_like(xt)
        loss = loss_fn(net(noisy).squeeze(1), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            val = loss_fn(net(xvt).squeeze(1), yvt).item()
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    w1 = net[0].weight.detach().numpy() / sd[None, :]
    b1 = net[0].bias.detach().numpy() - w1 @ mu
    w2 = net[3].weight.detach().numpy()
    b2 = net[3].bias.detach().numpy()
    return [a.astype(np.float32) for a in (w1, b1, w2, b2)], best


def prob(head, x):
    """p(reason) exactly as `Switcher::prob` computes it."""
    w1, b1, w2, b2 = head
    z = np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2
    return 1.0 / (1.0 + np.exp(-z[:, 0]))


def pick_threshold(p, y):
    """The best validation accuracy; among ties the highest threshold."""
    candidates = np.unique(np.concatenate([p, [0.5]]))
    best_t, best_acc = 0.5, -1.0
    for t in candidates:
        acc = float(((p >= t) == (y == 1)).mean())
        if acc > best_acc or (acc == best_acc and t > best_t):
            best_t, best_acc = float(t), acc
    # Halfway to the next probability above, so the same prompts route the same way
    # with f32 rounding differences between backends.
    below = p[p < best_t]
    if len(below):
        best_t = float((best_t + below.max()) / 2)
    return best_t, best_acc


def report(name, p, y, t, rows=None):
    pred = p >= t
    out = {
        "set": name,
        "n": int(len(y)),
        "accuracy": round(float((pred == (y == 1)).mean()), 4),
        "reason_recall": round(float(pred[y == 1].mean()), 4),
        "chat_recall": round(float((~pred)[y == 0].mean()), 4),
    }
    if rows is not None:
        held = np.array([r.get("held_out", False) for r in rows])
        if held.any():
            out["held_out_n"] = int(held.sum())
            out["held_out_accuracy"] = round(float((pred[held] == (y[held] == 1)).mean()), 4)
    return out


def main():
    ap = argparse.ArgumentParser(description="train the switcher head on edge-reason's own features")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "www" / "reasoning" / "switcher")
    ap.add_argument("--cache", type=Path, default=HERE / "out")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "edge-reason")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--epochs", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.time()
    # The templated switch set and the short forms (train/data.py); the paraphrase test
    # set's templates are in no training file.
    x, y, _ = features(args, ["switch_train.jsonl", "switch_paraphrase_train.jsonl"])
    xv, yv, _ = features(args, ["switch_val.jsonl", "switch_paraphrase_val.jsonl"])
    xs, ys, test_rows = features(args, ["switch_test.jsonl"])
    xp, yp, para_rows = features(args, ["switch_paraphrase_test.jsonl"])
    head, val_loss = train_head(x, y, xv, yv, args)
    threshold, _ = pick_threshold(prob(head, xv), yv)

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import save_file

    save_file(dict(zip(["w1", "b1", "w2", "b2"], head)), str(args.out / "switcher.safetensors"))
    config = {"hidden": args.hidden, "threshold": round(threshold, 6), "pooling": "mean", "ema_alpha": EMA_ALPHA, "chunk": CHUNK}
    (args.out / "switcher.json").write_text(json.dumps(config, indent=2) + "\n")
    results = [
        report("train", prob(head, x), y, threshold),
        report("val", prob(head, xv), yv, threshold),
        report("test", prob(head, xs), ys, threshold, test_rows),
        report("paraphrase_test", prob(head, xp), yp, threshold),
    ]
    summary = {"threshold": config["threshold"], "val_loss": round(val_loss, 4), "results": results, "wall_s": round(time.time() - t0, 1)}
    (args.cache / "switcher_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
