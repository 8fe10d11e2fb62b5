#!/usr/bin/env python3
"""Budget forcing learned by RL: GRPO (TRL) on the SFT reasoning adapter, masked-prompt,
on the INT4 base model.

    .venv-train/bin/python train/grpo.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --sft train/out/sft --out train/out/grpo [--steps 60 --generations 8]

- The prompts are the training problems with a thinking budget B stated at the end of
  the user's message, exactly as the runtime states it (`edge-reason reason
  --budget-hint`, `BudgetHint` in src/reason/budget.rs): "Think for at most B tokens.",
  B drawn from the buckets (BUCKETS).
- Reward = correct x R_budget(L), L = the completion's tokens (thinking and answer):
  R is 1 up to (1 - m) B, falls linearly to 0 at (1 + m) B, 0 beyond (the method's soft
  barrier, m = --margin). Correct: the `Final answer:` line after `</think>` keys to
  the reference as the runtime's vote keys it (`final_answer`; tests/it/train_data.rs
  checks the two agree).
- Masked LoRA, as in SFT and as the runtime runs it: the prompt without the adapter,
  then the think prefix (`<think>\n`, which the runtime feeds when it reasons) and the
  completion with it (GenerationMask). `check_masking` verifies at start that TRL's
  scoring then gives the logits of the runtime's prefill-then-decode.
- It runs on the CPU (a smoke step of 4 completions of up to 160 tokens took 65 s on
  one thread with other work on the machine; a full run is not timed yet); a CUDA GPU
  is used when PyTorch sees one.

Writes a PEFT directory (the trained adapter, for `edge-reason export-adapter`),
budget_hint.json (the template and buckets the adapter was trained with, for the CLI's
`--budget-hint`) and train_log.json (reward, length and accuracy per step, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sft import BUCKETS, TARGETS, PromptMask, as_peft, chat_renderer, with_hint, write_budget_hint  # noqa: E402

THINK_PREFIX = "<think>\n"  # what the runtime feeds first when it reasons (ReasonOptions::think_prefix)
# A number as the runtime scans one (src/reason/answer.rs `number_spans`): digits with
# `,` `.` `/` inside, an optional leading `-` or `.`.
NUMBER = re.compile(r"(?:\d|[-.](?=\d))(?:\d|[,./](?=\d))*")
LABELS = ("final answer:", "answer:")


def budget_reward(tokens: int, budget: int, margin: float) -> float:
    """The soft barrier: 1 up to (1 - m) B, linear to 0 at (1 + m) B."""
    lo, hi = (1 - margin) * budget, (1 + margin) * budget
    if tokens <= lo:
        return 1.0
    if tokens >= hi:
        return 0.0
    return (hi - tokens) / (hi - lo)


def final_answer(text: str) -> int | None:
    """The integer the runtime's vote keys this completion's answer to
    (src/reason/answer.rs `extract`), where the completion has the trained format: a
    `Final answer:` line after `</think>`. (The runtime also reads `Answer:`, `\\boxed{}`
    and a bare last number; the reward asks for the format.)"""
    for region in reversed(text.split("</think>")[1:]):
        labelled = None
        for line in reversed(region.split("\n")):
            lower = line.lower()
            label = next((lb for lb in LABELS if lb in lower), None)
            rest = label and line[lower.rfind(label) + len(label):].strip()
            if rest:
                labelled = (label, rest)
                break
        if "\\boxed{" in region or (labelled is None and NUMBER.search(region)):
            return None  # the runtime answers from this part, not by the format
        if labelled is not None:
            return integer_key(labelled[1]) if labelled[0] == "final answer:" else None
    return None


def integer_key(answer: str) -> int | None:
    """The runtime's `normalize` of an answer, where that is an integer: arithmetic worked
    out and closed with a period (`60 + 2 = 62.`), else a number alone with an optional
    currency sign, `$...$`, and up to two unit words or `%` after it."""
    closed = answer.strip()
    if closed.endswith(".") and "=" in closed:
        work, result = closed[:-1].rsplit("=", 1)
        result = result.strip().lstrip("$€£")
        if re.search(r"\d", work) and re.fullmatch(r"[\d\s+\-*/x×÷().,=]*", work) and NUMBER.fullmatch(result):
            return as_integer(result)
    t = answer.strip()
    while True:  # markup and punctuation around it, in any order
        u = t.strip("*`\"' \t\n").rstrip(".!;,")
        if u == t:
            break
        t = u
    if len(t) >= 2 and t[0] == "$" and t[-1] == "$":
        t = t[1:-1]
    t = t.lstrip("$€£").strip()
    spans = list(NUMBER.finditer(t))
    if not spans or spans[0].start() != 0:
        return None
    tail = t[spans[0].end():].strip()
    units = tail in ("", "%") or (len(spans) == 1 and len(tail.split()) <= 2 and all(c.isalpha() or c.isspace() for c in tail))
    return as_integer(spans[0].group()) if units else None


def as_integer(number: str) -> int | None:
    """`1,000`, `-7`, `4/2`, `5.0` as an integer (the runtime's `parse_number`), else None."""
    if "/" in number:
        a, b = number.split("/", 1)
        a, b = as_fraction_part(a), as_fraction_part(b)
        return int(a / b) if a is not None and b not in (None, 0) and (a / b).is_integer() else None
    value = as_fraction_part(number)
    return int(value) if value is not None and value.is_integer() else None


def as_fraction_part(number: str) -> float | None:
    if "," in number:  # thousands separators only in groups of three
        groups = number.split(".")[0].lstrip("-").split(",")
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            return None
        number = number.replace(",", "")
    try:
        return float(number)
    except ValueError:
        return None


def prompts(path: Path, render, rng: random.Random, limit: int):
    rows = [json.loads(line) for line in path.open()]
    rows = [r for r in rows if r.get("solution")]
    rng.shuffle(rows)
    if limit:
        rows = rows[:limit]
    out = []
    for r in rows:
        b = rng.choice(BUCKETS)
        prompt = render(with_hint(r["prompt"], b)) + THINK_PREFIX
        out.append({"prompt": prompt, "answer": int(r["answer"]), "budget": b})
    return out


class GenerationMask:
    """A forward pre-hook on the causal LM that sets PromptMask.value (what every LoRA
    output is multiplied by) the way the runtime runs the adapter. The runtime prefills
    the prompt with the base model, then feeds the think prefix (`<think>\n`, the last
    `prefix` tokens of the prompts given to TRL) and everything after with the adapter on:
    - TRL scoring a completion (labels given): 1 on the completion (where a label is)
      and on the prefix before it, 0 on the prompt;
    - a prefill (no or an empty cache): 0, except 1 on the prefix at its end;
    - a decode step: the adapter on everywhere (no mask)."""

    def __init__(self, prefix: int):
        self.prefix = prefix
        self.enabled = True

    def __call__(self, _module, args, kwargs):
        if not self.enabled:
            return None
        import torch

        labels = kwargs.get("labels")
        cache = kwargs.get("past_key_values")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if labels is not None:
            on = labels != -100
            first = int(on.any(0).nonzero()[0])  # prompts are left-padded: one column
            on[:, max(0, first - self.prefix) : first] = True
            PromptMask.value = on.unsqueeze(-1).to(ids.device, dtype=torch.float32)
        elif cache is not None and cache.get_seq_length() > 0:
            PromptMask.value = None
        else:
            mask = ids.new_zeros((*ids.shape, 1), dtype=torch.float32)
            mask[:, -self.prefix :] = 1.0
            PromptMask.value = mask
        return None


def check_masking(model, tok, hook: GenerationMask, prompt: str, completion: str, tolerance: float = 1e-3):
    """The logits TRL scores a completion with (one forward over the prompt, the think
    prefix and the completion; the mask from the labels) equal the runtime's way: the
    prompt prefilled without the adapter, then the prefix and the completion decoded
    with it from that cache. Returns that difference and the one without the mask."""
    import torch

    def ids(text):
        return tok(text, add_special_tokens=False, return_tensors="pt").input_ids

    p, k, c = ids(prompt), ids(THINK_PREFIX), ids(completion)
    full = torch.cat([p, k, c], dim=1)
    start = p.shape[1] + k.shape[1]  # the first completion token's position
    labels = full.clone()
    labels[:, :start] = -100
    with torch.no_grad():
        scored = model(input_ids=full, labels=labels).logits[0, start - 1 : -1]
        hook.enabled = False
        PromptMask.value = torch.zeros((*p.shape, 1))
        pre = model(input_ids=p, use_cache=True)
        PromptMask.value = None
        dec = model(input_ids=torch.cat([k, c], dim=1), past_key_values=pre.past_key_values, use_cache=True)
        runtime = dec.logits[0, k.shape[1] - 1 : -1]
        # Without the mask the prompt's keys and values would carry the adapter.
        everywhere = model(input_ids=full).logits[0, start - 1 : -1]
        hook.enabled = True
    diff = (scored - runtime).abs().max().item()
    unmasked = (everywhere - runtime).abs().max().item()
    if diff > tolerance:
        raise SystemExit(f"masked LoRA check failed: the scored logits differ from prefill-then-decode by {diff:.2e}")
    return diff, unmasked


def hf_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from sft import tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer())
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    tok.padding_side = "left"
    return tok


def main():
    ap = argparse.ArgumentParser(description="GRPO budget forcing of the reasoning LoRA")
    ap.add_argument("--model", required=True)
    ap.add_argument("--sft", type=Path, help="the SFT adapter (PEFT or the runtime's INT8 directory); without it a fresh LoRA")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "grpo")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt (the group)")
    ap.add_argument("--max-completion", type=int, default=192)
    ap.add_argument("--margin", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use at most this many training problems")
    ap.add_argument("--save-every", type=int, default=10, help="keep a checkpoint every this many steps (in OUT/trainer)")
    ap.add_argument("--resume", action="store_true", help="go on from the last checkpoint in OUT/trainer")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop after the first step that ends this many minutes after the start, and save the adapter (0: no limit)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gguf_hf import hf_llama, read_gguf_llama

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    t_start = time.time()

    hp, tensors = read_gguf_llama(args.model)
    base = hf_llama(hp, tensors)
    tok = hf_tokenizer()
    base.generation_config.eos_token_id = tok.eos_token_id
    base.generation_config.pad_token_id = tok.pad_token_id
    if args.sft:
        sft = as_peft(args.sft, args.out / "sft-f32")
        model = PeftModel.from_pretrained(base, str(sft), is_trainable=True)
    else:
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none"))
    n_masked = PromptMask.install(model)
    # (The prefix tokenizes the same alone as after the chat template's last newline.)
    hook = GenerationMask(len(tok(THINK_PREFIX, add_special_tokens=False).input_ids))
    model.base_model.model.register_forward_pre_hook(hook, with_kwargs=True)

    render = chat_renderer(args.model)
    rows = prompts(args.data / "math_train.jsonl", render, rng, args.limit)
    bare = rows[0]["prompt"][: -len(THINK_PREFIX)]
    diff, unmasked = check_masking(model, tok, hook, bare, "Start: 12.\n</think>\n\nFinal answer: 12")
    # (A fresh LoRA is zero, so both are 0 there; from the SFT adapter the second is not.)
    print(json.dumps({"masked_lora_check": f"{diff:.1e}", "without_the_mask": f"{unmasked:.1e}"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    steps_log = args.out / "steps.jsonl"  # one line per step, appended across resumed runs
    if not args.resume:
        steps_log.unlink(missing_ok=True)
    log = [json.loads(line) for line in steps_log.open()] if steps_log.exists() else []
    session_start = len(log)

    def reward(prompts, completions, completion_ids, answer, budget, **_):
        out = []
        for text, ids, want, b in zip(completions, completion_ids, answer, budget):
            right = final_answer(text) == want
            out.append(float(right) * budget_reward(len(ids), b, args.margin))
        log.append({
            "step": len(log) + 1,
            "s": round(time.time() - t_start, 1),
            "reward": round(sum(out) / len(out), 4),
            "correct": round(sum(final_answer(t) == w for t, w in zip(completions, answer)) / len(out), 4),
            "tokens": round(sum(len(i) for i in completion_ids) / len(out), 1),
            "budget": round(sum(budget) / len(budget), 1),
        })
        with steps_log.open("a") as f:
            f.write(json.dumps(log[-1]) + "\n")
        print(json.dumps(log[-1]), flush=True)
        return out

    batch = args.prompts_per_step * args.generations
    config = GRPOConfig(
        output_dir=str(args.out / "trainer"),
        max_steps=args.steps,
        learning_rate=args.lr,
        per_device_train_batch_size=batch,
        num_generations=args.generations,
        max_completion_length=args.max_completion,
        temperature=args.temperature,
        beta=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=args.save_every,
        save_total_limit=1,
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        remove_unused_columns=False,
    )
    print(json.dumps({"problems": len(rows), "steps": args.steps, "batch": batch, "masked_lora_modules": n_masked}), flush=True)

    class TimeLimit(TrainerCallback):
        """Ends training after the step that passes --max-minutes (a lease on a GPU, a
        CPU session): the trainer then saves the adapter as after its last step."""

        def on_step_end(self, _args, state, control, **_):
            if args.max_minutes and time.time() - t_start > 60 * args.max_minutes:
                print(json.dumps({"time_limit": args.max_minutes, "stopped_after_step": state.global_step}), flush=True)
                control.should_training_stop = True
            return control

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[TimeLimit()],
    )
    checkpoints = sorted((args.out / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if args.resume and not checkpoints:
        raise SystemExit(f"--resume: no checkpoint in {args.out / 'trainer'}; run without --resume to start")
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if args.resume else None)
    PromptMask.value = None

    trainer.model.save_pretrained(str(args.out))
    write_budget_hint(args.out, BUCKETS)
    with (args.out / "train_log.json").open("w") as f:
        wall = round(time.time() - t_start, 1)
        json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": wall, "steps_this_run": len(log) - session_start, "log": log}, f)
    print(json.dumps({"saved": str(args.out), "wall_s": wall}))


if __name__ == "__main__":
    main()
