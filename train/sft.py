#!/usr/bin/env python3
"""Supervised fine-tuning of the reasoning LoRA, masked-prompt, on the INT4 base model.

    .venv-train/bin/python train/sft.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data train/data --out train/out/sft [--epochs 1 --r 16 --alpha 32]

- The base model is the GGUF's own weights, dequantized (what the runtime multiplies),
  in a Hugging Face Llama (train/gguf_hf.py), frozen.
- LoRA (PEFT) on q/k/v/o/gate/up/down; the loss is on the response tokens only.
- Masked LoRA: the adapter's output is multiplied by 0 on the prompt's tokens and 1 on
  the response's, so the prompt's keys and values are the base model's. That is what
  the runtime does: it prefills the prompt once with the base model and decodes with
  the adapter on from that cache.
- Prompts are rendered with the GGUF's own chat template and tokenized with the
  tokenizer the runtime uses (checked against llama.cpp in tests), then the response
  (`<think> ... </think>` + `Final answer: N` + end of turn) is tokenized on its own:
  the same token boundary the runtime has between the prompt and what it generates.

Budget-stated SFT (`--budget-buckets 32,64,128 --init ADAPTER`): each problem gets a
thinking budget drawn from no budget and the buckets, stated at the end of the user's
message the way the runtime states it (`BudgetHint::apply`: "Think for at most B
tokens."). The target is the full worked solution with no budget or a budget of at
least `--full-from` tokens, and the compact one (data.compact_solution: the arithmetic
without the copied story, about 40% fewer thinking tokens) below it; with
`--full-if-fits`, also the full one wherever its thinking fits in the stated budget.
`--short-form` names other short forms (data.keyed_solution, data.tight_solution), or a
list of them tried in order: the first whose thinking fits the budget, else the last. Continued from the
SFT adapter (`--init`, PEFT or the runtime's INT8 form), it learns to write shorter
when a small budget is stated and keeps the full form otherwise.

Writes a PEFT directory (adapter_config.json + adapter_model.safetensors),
budget_hint.json with budget buckets (how the runtime states the budget to this
adapter) and train_log.json (loss per step, wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402  (train/data.py, beside this file)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHORT_FORMS = {"compact": data.compact_solution, "keyed": data.keyed_solution, "tight": data.tight_solution}
HINT = "Think for at most {budget} tokens."  # how a budget is stated (budget_hint.json)
BUCKETS = [32, 64, 128]


def with_hint(prompt: str, budget: int) -> str:
    """The user's message with its budget stated, as `BudgetHint::apply` does."""
    return f"{prompt.rstrip()}\n\n{HINT.format(budget=budget)}"


def write_budget_hint(out: Path, buckets) -> None:
    """budget_hint.json: how the runtime states a budget to this adapter (the CLI and the
    browser engine read it; `edge-reason export-adapter` keeps it)."""
    (out / "budget_hint.json").write_text(json.dumps({"template": HINT, "buckets": list(buckets)}) + "\n")


def as_peft(adapter: Path, scratch: Path) -> Path:
    """A PEFT directory PyTorch can train: `adapter` itself, or for the runtime's INT8
    form (`edge-reason export-adapter`: int8 weights with a `.scale` per row, as shipped
    in www/reasoning/adapter) a dequantized f32 copy in `scratch`."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    if not any(t.dtype == np.int8 for t in tensors.values()):
        return adapter
    out = {k: (t.astype(np.float32) * tensors[f"{k}.scale"]) for k, t in tensors.items() if not k.endswith(".scale")}
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy(adapter / "adapter_config.json", scratch / "adapter_config.json")
    save_file(out, str(scratch / "adapter_model.safetensors"))
    return scratch


class PromptMask:
    """The (batch, time, 1) mask every LoRA output is multiplied by: 0 on prompt tokens."""

    value = None

    @classmethod
    def install(cls, model):
        n = 0
        for name, module in model.named_modules():
            if name.endswith("lora_B.default"):
                module.register_forward_hook(lambda _m, _i, out: out if cls.value is None else out * cls.value)
                n += 1
        if n == 0:
            raise SystemExit("no LoRA modules found to mask")
        return n


def chat_renderer(model_path: str):
    """Renders a user message with the GGUF's chat template (as the runtime does)."""
    import gguf
    import jinja2

    r = gguf.GGUFReader(model_path)
    f = r.fields["tokenizer.chat_template"]
    template = jinja2.Environment().from_string(bytes(f.parts[f.data[0]]).decode("utf-8"))
    return lambda text: template.render(messages=[{"role": "user", "content": text}], add_generation_prompt=True)


def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(HERE.parent / "tests" / "fixtures" / "smollm2_tokenizer.json"))


def examples(path: Path, render, tok, max_len: int, end_of_turn: str, budgets=(), full_from=0, rng=None, full_if_fits=False,
             short=(data.compact_solution,)):
    """(prompt ids, response ids) per problem. With `budgets`, each problem's budget is
    drawn from them (None: none stated), and below `full_from` the solution is the first
    of the `short` forms whose thinking fits in the budget, else the last of them
    (the full one first where `full_if_fits` and it fits)."""
    out = []
    for line in path.open():
        r = json.loads(line)
        if not r.get("solution"):
            continue
        b = rng.choice(budgets) if budgets else None
        message = r["prompt"] if b is None else with_hint(r["prompt"], b)
        full = b is None or b >= full_from or (full_if_fits and thinking_tokens(tok, r["solution"]) <= b)
        solution = r["solution"] if full else first_fitting(tok, r["solution"], short, b)
        prompt = tok.encode(render(message), add_special_tokens=False).ids
        response = tok.encode(solution + end_of_turn, add_special_tokens=False).ids
        if len(prompt) + len(response) > max_len:
            continue
        out.append((prompt, response))
    return out


def first_fitting(tok, solution: str, forms, budget: int) -> str:
    """The solution in the first of `forms` (in the order given) whose thinking fits in
    `budget`, else in the last."""
    for form in forms[:-1]:
        written = form(solution)
        if thinking_tokens(tok, written) <= budget:
            return written
    return forms[-1](solution)


def thinking_tokens(tok, solution: str) -> int:
    """The tokens the runtime counts against a thinking budget: after `<think>\n`, up to `</think>`."""
    think = solution.split("</think>", 1)[0].removeprefix("<think>\n")
    return len(tok.encode(think, add_special_tokens=False).ids)


def batches(rows, batch, rng):
    order = list(range(len(rows)))
    rng.shuffle(order)
    for i in range(0, len(order) - batch + 1, batch):
        yield [rows[j] for j in order[i : i + batch]]


def collate(group, pad_id):
    import torch

    t = max(len(p) + len(r) for p, r in group)
    ids = torch.full((len(group), t), pad_id, dtype=torch.long)
    labels = torch.full((len(group), t), -100, dtype=torch.long)
    attn = torch.zeros((len(group), t), dtype=torch.long)
    mask = torch.zeros((len(group), t, 1))
    for b, (p, r) in enumerate(group):
        seq = p + r
        ids[b, : len(seq)] = torch.tensor(seq)
        attn[b, : len(seq)] = 1
        labels[b, len(p) : len(seq)] = torch.tensor(r)
        mask[b, len(p) : len(seq)] = 1.0
    return ids, attn, labels, mask


def response_loss(model, ids, attn, labels):
    """Mean cross-entropy of the response tokens, with the vocabulary projection computed
    only where a label is (about half the positions; the 49k-wide head is a fifth of the
    model's work per token)."""
    import torch

    hidden = model.base_model.model.model(input_ids=ids, attention_mask=attn).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = model.base_model.model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def main():
    ap = argparse.ArgumentParser(description="masked-prompt LoRA SFT on the INT4 base model")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "sft")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=320)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with AVX512-BF16/AMX, GPUs)")
    ap.add_argument("--limit", type=int, default=0, help="train on at most this many examples (smoke runs)")
    ap.add_argument("--init", type=Path, help="start from this adapter (PEFT or the runtime's INT8 form) instead of a fresh LoRA")
    ap.add_argument("--budget-buckets", default="", help="state budgets drawn from these (and none), e.g. 32,64,128")
    ap.add_argument("--full-from", type=int, default=128, help="the smallest stated budget trained to the full solution")
    ap.add_argument("--full-if-fits", action="store_true", help="below --full-from, the full solution too where its thinking fits the budget")
    ap.add_argument("--short-form", default="compact",
                    help="the solution below --full-from, comma-separated forms tried in order (the first that fits the budget, "
                         "else the last): compact (the arithmetic alone), keyed (two words of each sentence, tight arithmetic), "
                         "tight (every sentence, arithmetic without spaces); e.g. tight,compact")
    args = ap.parse_args()
    buckets = [int(b) for b in args.budget_buckets.split(",") if b]
    short_names = [f.strip() for f in args.short_form.split(",") if f.strip()]
    unknown = [f for f in short_names if f not in SHORT_FORMS]
    if unknown or not short_names:
        raise SystemExit(f"--short-form {args.short_form!r}: name one or more of {', '.join(sorted(SHORT_FORMS))}, comma-separated")
    short_forms = tuple(SHORT_FORMS[f] for f in short_names)

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from gguf_hf import hf_llama, read_gguf_llama

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    t_start = time.time()

    hp, tensors = read_gguf_llama(args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = hf_llama(hp, tensors).to(device)
    model.config.use_cache = False
    if args.init:
        model = PeftModel.from_pretrained(model, str(as_peft(args.init, args.out / "init-f32")), is_trainable=True)
    else:
        lora = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=TARGETS, bias="none")
        model = get_peft_model(model, lora)
    n_masked = PromptMask.install(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    render, tok = chat_renderer(args.model), tokenizer()
    budgets = [None, *buckets] if buckets else []
    rows = examples(args.data / "math_train.jsonl", render, tok, args.max_len, "<|im_end|>", budgets, args.full_from, rng,
                    args.full_if_fits, short_forms)
    if args.limit:
        rows = rows[: args.limit]
    pad_id = tok.token_to_id("<|im_end|>")
    steps = max(1, int(len(rows) * args.epochs) // args.batch)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    print(json.dumps({"examples": len(rows), "steps": steps, "trainable": trainable, "masked_lora_modules": n_masked}), flush=True)

    log = []
    model.train()
    step = 0
    while step < steps:
        for group in batches(rows, args.batch, rng):
            if step >= steps:
                break
            ids, attn, labels, mask = collate(group, pad_id)
            PromptMask.value = mask.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss = response_loss(model, ids.to(device), attn.to(device), labels.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            log.append({"step": step, "loss": round(loss.item(), 4), "s": round(time.time() - t_start, 1)})
            if step % 10 == 0 or step == steps:
                print(json.dumps(log[-1]), flush=True)
    PromptMask.value = None

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    if buckets:
        write_budget_hint(args.out, buckets)
    with (args.out / "train_log.json").open("w") as f:
        json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": round(time.time() - t_start, 1), "log": log}, f)
    print(json.dumps({"saved": str(args.out), "wall_s": round(time.time() - t_start, 1)}))


if __name__ == "__main__":
    main()
