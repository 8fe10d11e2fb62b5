#!/usr/bin/env python3
"""The results table: every configuration measured through `edge-reason` itself (the
same INT4 weights and runtime the browser uses), written to docs/results.md with a plot
(docs/results.png: accuracy against mean generated tokens).

    .venv-train/bin/python train/eval.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        [--problems 300] [--only sft,vote] [--threads 2]

Problems: the test split's held-out templates first (bakery, tank: never trained on),
then in-template problems, `--problems` in all. Each configuration is one
`edge-reason reason --prompts` run, the model loaded once; its per-problem lines are kept
in train/out/eval/<config>.jsonl, so an interrupted evaluation resumes and the table
can be rewritten from them (`--table-only`). A problem counts as right when the vote's
answer key (the runtime's own extraction and normalization) equals the reference's.

Votes over N = 1, 4, 8 come from one 8-candidate run without early stopping: the
first N candidates of it are an N-candidate run (each candidate's sampler is seeded by
the request seed and its index), recounted with the runtime's rules (majority: votes,
then weight, then the lowest candidate index; weighted: exp of the answer tokens' mean
log-probability). The recount of all 8 is checked against the runtime's own vote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHIPPED = ROOT / "www" / "reasoning"
# Trained, committed and measured here, but not shipped: the budget-stated SFT adapter
# (train/reproduce.sh writes it; the bsft_* rows run it).
BUDGET_SFT = HERE / "artifacts" / "budget-sft"

DIRECT = "{prompt}\nAnswer with the final number only."
STEP_BY_STEP = "{prompt}\nLet's think step by step, then give the final answer."

# name: (what it is, prompt template, edge-reason arguments)
CONFIGS = {
    "base_direct": ("base model, direct answer", DIRECT,
                    ["--mode", "chat", "--no-defaults", "--max-tokens", "24", "--temperature", "0"]),
    "base_cot": ("base model, \"think step by step\"", STEP_BY_STEP,
                 ["--mode", "chat", "--no-defaults", "--max-tokens", "256", "--temperature", "0"]),
    "sft": ("SFT adapter (greedy, budget 256)", "{prompt}",
            ["--mode", "reason", "--n", "1", "--budget", "256", "--answer-tokens", "16", "--temperature", "0"]),
    "sft_b64": ("SFT adapter, runtime budget forcing at 64", "{prompt}",
                ["--mode", "reason", "--n", "1", "--budget", "64", "--answer-tokens", "16", "--temperature", "0"]),
    "sft_b32": ("SFT adapter, runtime budget forcing at 32", "{prompt}",
                ["--mode", "reason", "--n", "1", "--budget", "32", "--answer-tokens", "16", "--temperature", "0"]),
    # The GRPO adapter (train/grpo.py) with its budget stated in the prompt as trained
    # (the runtime reads how from the adapter's budget_hint.json) and `</think>` forced
    # at the same budget.
    "grpo_b64": ("GRPO adapter (train/grpo.py), budget 64 stated and forced", "{prompt}",
                 ["--mode", "reason", "--n", "1", "--budget", "64", "--answer-tokens", "16", "--temperature", "0"]),
    "grpo_b32": ("GRPO adapter (train/grpo.py), budget 32 stated and forced", "{prompt}",
                 ["--mode", "reason", "--n", "1", "--budget", "32", "--answer-tokens", "16", "--temperature", "0"]),
    # The budget-stated SFT adapter (train/sft.py --budget-buckets): the same way.
    "bsft_b64": ("budget-stated SFT adapter, budget 64 stated and forced", "{prompt}",
                 ["--mode", "reason", "--n", "1", "--budget", "64", "--answer-tokens", "16", "--temperature", "0"]),
    "bsft_b32": ("budget-stated SFT adapter, budget 32 stated and forced", "{prompt}",
                 ["--mode", "reason", "--n", "1", "--budget", "32", "--answer-tokens", "16", "--temperature", "0"]),
    "vote": ("SFT adapter, 8 candidates at temperature 0.7", "{prompt}",
             ["--mode", "reason", "--n", "8", "--budget", "256", "--answer-tokens", "16", "--temperature", "0.7",
              "--seed", "1", "--no-early-stop"]),
}

# The switcher alone on prompts phrased unlike its training set (routes only: one token).
PARAPHRASE = {
    "switch_paraphrase": ("the switcher's routes on the paraphrase set", "{prompt}",
                          ["--mode", "auto", "--n", "1", "--budget", "1", "--answer-tokens", "1", "--max-tokens", "1",
                           "--temperature", "0"]),
}

# Rows of adapters trained with their budget stated: name prefix -> the option naming it.
BUDGET_TRAINED = {"grpo": "grpo", "bsft": "budget_sft"}

# The mixed set (auto mode): the same request three ways, the shipped heads loaded.
MIXED = {
    "mixed_never": ("never reason (chat mode)", "{prompt}",
                    ["--mode", "chat", "--max-tokens", "64", "--temperature", "0"]),
    "mixed_always": ("always reason (SFT adapter, greedy)", "{prompt}",
                     ["--mode", "reason", "--n", "1", "--budget", "256", "--answer-tokens", "16", "--temperature", "0"]),
    "mixed_auto": ("auto (the switcher decides)", "{prompt}",
                   ["--mode", "auto", "--n", "1", "--budget", "256", "--answer-tokens", "16", "--max-tokens", "64",
                    "--temperature", "0"]),
}


def problems(args, n=None):
    """The first n test problems: half from the held-out templates, half in-template,
    each half taken round robin over its templates."""
    n = n or args.problems
    rows = [json.loads(line) for line in (args.data / "math_test.jsonl").open()]

    def by_template(part):
        groups = {}
        for r in part:
            groups.setdefault(r["template"], []).append(r)
        return interleave(list(groups.values()), [len(g) for g in groups.values()])

    held = by_template([r for r in rows if r["held_out"]])
    seen = by_template([r for r in rows if not r["held_out"]])
    half = n // 2
    picked = held[:half] + seen[: n - min(half, len(held))]
    return picked[:n]


def key(r):
    """A problem's id in the kept results: its id and a hash of its prompt, so results
    kept from data generated differently are never reused."""
    return f"{r['id']}:{hashlib.sha1(r['prompt'].encode()).hexdigest()[:10]}"


def stream_into(cmd, path, what):
    """Runs `cmd`, appending each JSON line it prints to `path` as it comes (so a run cut
    short keeps what it did) and yielding it parsed."""
    with path.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            out.write(line)
            out.flush()
            yield json.loads(line)
        if proc.wait() != 0:
            raise SystemExit(f"{what}: edge-reason failed (exit {proc.returncode})")


def budget_trained(args, name):
    """The adapter directory a budget-trained row runs (None: the row is not one of
    those; False: it is, and its option was not given)."""
    option = BUDGET_TRAINED.get(name.split("_")[0])
    if option is None:
        return None
    return getattr(args, option) or False


def run_config(args, name, rows):
    """Per-problem result lines of one configuration (cached; resumed when cut short)."""
    _, template, extra = {**CONFIGS, **MIXED, **PARAPHRASE}[name]
    path = args.out / f"{name}.jsonl"
    done = {}
    if path.exists():
        for line in path.open():
            r = json.loads(line)
            done[r["id"]] = r
    todo = [r for r in rows if key(r) not in done]
    if todo:
        inputs = args.out / f"{name}.prompts.jsonl"
        with inputs.open("w") as f:
            for r in todo:
                f.write(json.dumps({"id": key(r), "prompt": template.format(prompt=r["prompt"])}) + "\n")
        cmd = [str(args.bin), "reason", "--model", args.model, "--backend", "cpu", "--threads", str(args.threads),
               "--json", "--prompts", str(inputs), *extra]
        adapter = budget_trained(args, name)
        if adapter is False:
            flag = "--" + BUDGET_TRAINED[name.split("_")[0]].replace("_", "-")
            raise SystemExit(f"{name}: pass {flag} DIR (the budget-trained adapter, or its export-adapter INT8 form)")
        if adapter:
            if not (adapter / "budget_hint.json").is_file():
                raise SystemExit(f"{name}: {adapter} has no budget_hint.json (the trainer writes one; export-adapter keeps it)")
            cmd += ["--adapter", str(adapter)]
        elif "--no-defaults" not in extra:
            if args.switcher:
                cmd += ["--switcher", str(args.switcher)]
            if args.adapter:
                cmd += ["--adapter", str(args.adapter)]
            elif not (SHIPPED / "adapter").is_dir():
                raise SystemExit(f"{name}: no adapter shipped in {SHIPPED / 'adapter'}; pass --adapter DIR")
        t = time.time()
        for r in stream_into(cmd, path, name):
            done[r["id"]] = r
        print(json.dumps({"config": name, "problems": len(todo), "s": round(time.time() - t, 1)}), flush=True)
        inputs.unlink()
    return [done[key(r)] for r in rows]


def recount(candidates, weighted):
    """The runtime's vote over `candidates` (see src/reason/vote.rs)."""
    shares = {}
    for i, c in enumerate(candidates):
        if c.get("key") is None or c["reason"] == "consensus":
            continue
        w = math.exp(c["logprob"]) if weighted else 1.0
        s = shares.setdefault(c["key"], [0, 0.0, i])
        s[0] += 1
        s[1] += w
    if not shares:
        return None
    if weighted:
        order = sorted(shares.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[1][2]))
    else:
        order = sorted(shares.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[1][2]))
    return order[0][0]


def score(rows, results, answer_of, tokens_of):
    """{all, held_out}: problems, accuracy (%), mean generated tokens."""
    out = {}
    for subset in ("all", "held_out"):
        pairs = [(r, res) for r, res in zip(rows, results) if subset == "all" or r["held_out"]]
        if not pairs:
            continue
        right = sum(answer_of(res) == normalize(r["answer"]) for r, res in pairs)
        tokens = sum(tokens_of(res) for _, res in pairs)
        out[subset] = {"n": len(pairs), "acc": 100.0 * right / len(pairs), "tokens": tokens / len(pairs)}
    return out


def mixed_set(args):
    """Prompts with reference answers, half of them labelled reason (multi-step
    arithmetic from the math test split, held-out templates included, and multi-hop
    logic) and half chat (facts, one-step arithmetic and stories, one-fact lookups),
    from the test splits only."""
    hard = [r for r in problems(args, 10**6) if r["difficulty"] >= 2]
    math = interleave([[r for r in hard if r["held_out"]], [r for r in hard if not r["held_out"]]], [len(hard)] * 2)
    switch = [json.loads(line) for line in (args.data / "switch_test.jsonl").open()]
    logic = [r for r in switch if r["family"] == "logic"]
    chat = [r for r in switch if r["label"] == "chat" and r["answer"] is not None]
    half = args.mixed // 2
    reason = interleave([math, logic], [half - half // 3, half // 3])
    by_template = {}
    for r in chat:
        by_template.setdefault(r["template"], []).append(r)
    easy = interleave(list(by_template.values()), [half // len(by_template) + 1] * len(by_template))[:half]
    return interleave([reason, easy], [len(reason), len(easy)])


def interleave(lists, counts):
    """Round robin over lists, taking at most counts[i] from list i."""
    taken = [lst[:c] for lst, c in zip(lists, counts)]
    out = []
    for i in range(max((len(t) for t in taken), default=0)):
        out += [t[i] for t in taken if i < len(t)]
    return out


def mixed_right(r, res):
    """Numbers: the runtime's answer key equals the reference. Words (a name, a room, a
    capital): the reference appears as a word in the final answer (after `</think>`)."""
    answer = r["answer"]
    if re.fullmatch(r"-?\d+", answer):
        return res["vote"]["answer"] == normalize(answer)
    final = (res["texts"][0] if res["texts"] else "").rsplit("</think>", 1)[-1].lower()
    return re.search(rf"\b{re.escape(answer.lower())}\b", final) is not None


def score_mixed(rows, results):
    out = {}
    for subset in ("all", "reason", "chat"):
        pairs = [(r, res) for r, res in zip(rows, results) if subset == "all" or r["label"] == subset]
        out[subset] = {
            "n": len(pairs),
            "acc": 100.0 * sum(mixed_right(r, res) for r, res in pairs) / len(pairs),
            "tokens": sum(res["stats"]["tokens"] for _, res in pairs) / len(pairs),
            "reasoned": 100.0 * sum(res["route"]["mode"] == "reason" for _, res in pairs) / len(pairs),
        }
    out["switcher"] = 100.0 * sum((res["route"]["mode"] == "reason") == (r["label"] == "reason") for r, res in zip(rows, results)) / len(rows)
    return out


def score_paraphrase(rows, results):
    """Routes that agree with the label: overall, per label and per template."""
    def agree(pairs):
        return {"n": len(pairs), "agree": 100.0 * sum((res["route"]["mode"] == "reason") == (r["label"] == "reason") for r, res in pairs) / len(pairs)}
    pairs = list(zip(rows, results))
    out = {"all": agree(pairs)}
    for group in sorted({r["label"] for r in rows}) + sorted({r["template"] for r in rows}):
        out[group] = agree([(r, res) for r, res in pairs if group in (r["label"], r["template"])])
    return out


def normalize(answer):
    """The runtime's key of an integer reference answer (every math answer is one)."""
    return str(int(answer))


def main():
    ap = argparse.ArgumentParser(description="accuracy and tokens of every configuration, through edge-reason")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "eval")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "edge-reason")
    ap.add_argument("--adapter", type=Path, help="the reasoning adapter (default: the shipped one)")
    ap.add_argument("--switcher", type=Path, help="the switcher (default: the shipped one)")
    ap.add_argument("--grpo", type=Path, help="the budget-trained adapter (train/grpo.py), for the grpo_* rows")
    ap.add_argument("--budget-sft", type=Path, default=BUDGET_SFT if BUDGET_SFT.is_dir() else None,
                    help="the budget-stated SFT adapter (train/sft.py --budget-buckets), for the bsft_* rows (default: the committed one)")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--mixed", type=int, default=120, help="prompts in the mixed set (auto mode)")
    ap.add_argument("--only", default="", help="comma-separated configurations to run (default: all; 'mixed' for the three mixed-set ones)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--table-only", action="store_true", help="rewrite the table from the kept results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = problems(args)
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    if not args.only:  # rows of budget-trained adapters only when one is given
        names = [n for n in names if budget_trained(args, n) is not False]
    table = []
    for name in names:
        if args.table_only and not (args.out / f"{name}.jsonl").exists():
            continue
        results = run_config(args, name, rows) if not args.table_only else load_kept(args, name, rows)
        if results is None:
            continue
        what = CONFIGS[name][0]
        if name != "vote":
            table.append((what, score(rows, results, lambda r: r["vote"]["answer"], lambda r: r["stats"]["tokens"])))
            continue
        for res in results:
            mine = recount(res["candidates"], weighted=False)
            if mine != res["vote"]["answer"]:
                raise SystemExit(f"{res['id']}: recounted majority {mine} != the runtime's {res['vote']['answer']}")
        for n in (1, 4, 8):
            for weighted in ((False,) if n == 1 else (False, True)):
                label = f"SFT adapter, N = {n} sampled (0.7)" + ("" if n == 1 else (", weighted vote" if weighted else ", majority vote"))
                table.append((label, score(
                    rows, results,
                    lambda r, n=n, w=weighted: recount(r["candidates"][:n], w),
                    lambda r, n=n: sum(c["tokens"] for c in r["candidates"][:n]),
                )))
    mixed_rows = mixed_set(args)
    mixed = []
    for name in MIXED:
        if args.only and name not in args.only.split(",") and "mixed" not in args.only.split(","):
            continue
        if args.table_only and not (args.out / f"{name}.jsonl").exists():
            continue
        results = run_config(args, name, mixed_rows) if not args.table_only else load_kept(args, name, mixed_rows)
        if results is not None:
            mixed.append((MIXED[name][0], score_mixed(mixed_rows, results)))
    paraphrase = None
    wanted = not args.only or "switch_paraphrase" in args.only.split(",")
    if wanted and (not args.table_only or (args.out / "switch_paraphrase.jsonl").exists()):
        para_rows = [json.loads(line) for line in (args.data / "switch_paraphrase_test.jsonl").open()]
        results = run_config(args, "switch_paraphrase", para_rows) if not args.table_only else load_kept(args, "switch_paraphrase", para_rows)
        if results is not None:
            paraphrase = (para_rows, score_paraphrase(para_rows, results))
    write_docs(args, table, len(rows), mixed, mixed_rows, paraphrase)


def load_kept(args, name, rows):
    kept = {}
    for line in (args.out / f"{name}.jsonl").open():
        r = json.loads(line)
        kept[r["id"]] = r
    if not all(key(r) in kept for r in rows):
        print(f"{name}: only {sum(key(r) in kept for r in rows)} of {len(rows)} problems kept; skipped", file=sys.stderr)
        return None
    return [kept[key(r)] for r in rows]


def write_docs(args, table, n, mixed, mixed_rows, paraphrase=None):
    args.docs.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results",
        "",
        f"SmolLM2-135M-Instruct Q4_1 (the default model, the INT4 weights the browser runs), through",
        f"`edge-reason reason` on the CPU backend; {n} test problems, half of them from templates",
        "held out of training. Tokens: generated tokens per problem (all candidates together).",
        "Regenerate with `.venv-train/bin/python train/eval.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf`.",
        "",
        "| configuration | accuracy | mean tokens | held-out templates: accuracy | mean tokens |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for what, s in table:
        a, h = s.get("all"), s.get("held_out")
        lines.append(
            f"| {what} | {a['acc']:.1f}% | {a['tokens']:.0f} | "
            + (f"{h['acc']:.1f}% (n={h['n']}) | {h['tokens']:.0f} |" if h else "| |")
        )
    if mixed:
        n_reason = sum(r["label"] == "reason" for r in mixed_rows)
        lines += [
            "",
            f"Auto mode on a mixed set of {len(mixed_rows)} test prompts with answers: {n_reason} labelled reason",
            "(multi-step arithmetic, held-out templates included, and multi-hop logic) and",
            f"{len(mixed_rows) - n_reason} labelled chat (facts, capitals, one-step arithmetic and stories, one-fact",
            "lookups). Right: numbers by the runtime's answer key; words when the reference appears as",
            "a word in the final answer. The shipped switcher and adapter are loaded in all three.",
            "",
            "| mode | accuracy | mean tokens | routed to reasoning | reason-labelled: accuracy | tokens "
            "| chat-labelled: accuracy | tokens |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for what, m in mixed:
            lines.append(
                f"| {what} | {m['all']['acc']:.1f}% | {m['all']['tokens']:.0f} | {m['all']['reasoned']:.0f}% | "
                f"{m['reason']['acc']:.1f}% | {m['reason']['tokens']:.0f} | {m['chat']['acc']:.1f}% | {m['chat']['tokens']:.0f} |"
            )
        auto = dict(mixed).get(MIXED["mixed_auto"][0])
        if auto:
            lines += ["", f"Switcher on this set: {auto['switcher']:.1f}% of the routes agree with the labels."]
    if paraphrase:
        para_rows, p = paraphrase
        lines += [
            "",
            f"The switcher on {len(para_rows)} prompts phrased unlike any template it was trained on",
            "(train/data.py `switch_paraphrase_test.jsonl`: a multi-step problem in one sentence, casual",
            "facts and requests): routes that agree with the label.",
            "",
            "| prompts | n | agree |",
            "| --- | ---: | ---: |",
        ]
        for group, g in p.items():
            label = {"all": "all", "reason": "labelled reason", "chat": "labelled chat"}.get(group, f"template `{group}`")
            lines.append(f"| {label} | {g['n']} | {g['agree']:.1f}% |")
    (args.docs / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not table:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(11, 5))
    # A marker and colour per configuration, named in the legend: labels written beside
    # the points overlap where two configurations land close together.
    markers = "osD^vPX*<>hp"
    colours = plt.get_cmap("tab20").colors
    for i, (what, s) in enumerate(table):
        a = s["all"]
        ax.scatter(a["tokens"], a["acc"], marker=markers[i % len(markers)], color=colours[i % len(colours)],
                   s=55, edgecolors="black", linewidths=0.5, label=what, zorder=3)
    ax.set_xscale("log")
    xs = [s["all"]["tokens"] for _, s in table]
    lo, hi = min(xs) * 0.8, max(xs) * 1.3
    ax.set_xlim(lo, hi)
    ticks = [t for t in (10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000) if lo <= t <= hi]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("mean generated tokens per problem (log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"SmolLM2-135M Q4_1 on {n} test problems (edge-reason, CPU)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.docs / "results.png", dpi=120)


if __name__ == "__main__":
    main()
