#!/usr/bin/env python3
"""Checks that the Hugging Face model built from the GGUF (train/gguf_hf.py) is the model
the runtime runs: its logits at every position and its greedy tokens against the plain
f32 reference of edge-reason's own ops (tests/fixtures/smollm2_f32_reference.json).

    .venv-train/bin/python train/check_bridge.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TOLERANCE = 2e-2  # f32 both sides, different order of operations


def main():
    import torch

    from gguf_hf import hf_llama, read_gguf_llama

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    ref = json.loads((HERE.parent / "tests/fixtures/smollm2_f32_reference.json").read_text())
    model = hf_llama(*read_gguf_llama(args.model))
    worst, greedy_ok = 0.0, 0
    for p in ref["prompts"]:
        ids = torch.tensor([p["ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0]
        for pos, top in enumerate(p["top"]):
            for tok, want in top:
                worst = max(worst, abs(logits[pos, tok].item() - want))
            assert logits[pos].argmax().item() == top[0][0], f"{p['text']!r}: top-1 differs at {pos}"
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=len(p["greedy"]), do_sample=False, eos_token_id=2, pad_token_id=2)
        got = out[0, ids.shape[1]:].tolist()
        greedy_ok += got == p["greedy"]
        print(json.dumps({"prompt": p["text"][:40], "greedy_equal": got == p["greedy"]}))
    print(json.dumps({"prompts": len(ref["prompts"]), "max_logit_diff": round(worst, 5), "greedy_equal": greedy_ok}))
    assert worst < TOLERANCE, f"largest logit difference {worst}"


if __name__ == "__main__":
    main()
