#!/usr/bin/env python3
"""How closely llama.cpp agrees with its own reference fixture when only its KV-cache
precision changes: the yardstick for the parity tolerances in tests/it/parity.rs.

It reruns the prompts of tests/fixtures/smollm2_logits.json (made with an F32 KV cache)
with llama.cpp's default F16 KV cache and with F32, and reports how many 32-token greedy
continuations stay identical, top-1 agreement, and the worst |logit diff| over the
fixture's top 256.  Usage: python3 bench/llama_cpp_self_consistency.py
"""
import json, os

import numpy as np
import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fx = json.load(open(os.path.join(ROOT, "tests/fixtures/smollm2_logits.json")))
model = os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")

for label, kw in [("F16 KV (llama.cpp default)", {}),
                  ("F32 KV (as the fixture)", dict(type_k=0, type_v=0, flash_attn=False))]:
    llm = Llama(model, n_ctx=1024, n_batch=512, n_threads=2, verbose=False, **kw)
    vocab = llm.n_vocab()
    logits = lambda: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
    same = top1 = 0
    worst = 0.0
    for p in fx["prompts"]:
        llm.reset()
        llm.eval(p["ids"])
        l = logits().copy()
        worst = max(worst, max(abs(l[i] - v) for i, v in p["top"]))
        top1 += int(np.argmax(l)) == p["top"][0][0]
        out = []
        while True:
            out.append(int(np.argmax(logits())))
            if len(out) == len(p["greedy"]):
                break
            llm.eval([out[-1]])
        same += out == p["greedy"]
    n = len(fx["prompts"])
    print(f"{label}: greedy identical {same}/{n}, top-1 equal {top1}/{n}, worst |diff| {worst:.3f}")
