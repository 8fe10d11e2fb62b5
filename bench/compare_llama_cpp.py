#!/usr/bin/env python3
"""Native CPU speed of edge-reason vs llama.cpp, side by side in one run.

Both engines load the same GGUF and do the same work, alternating run by run so that
machine noise hits both alike; medians are reported with their ratio.
  prefill: N_PREFILL pseudo-random tokens into an empty cache (llama-bench's pp test)
  decode:  N_DECODE greedy single-token steps after a one-token prompt (its tg test)

llama.cpp comes from llama-cpp-python, built as ../shared/TOOLCHAIN.md says:
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF" \
    pip install llama-cpp-python
and runs with its defaults (F16 KV cache, flash attention as it chooses).

Usage: python3 bench/compare_llama_cpp.py [--model M] [--threads 1 2] [--runs 5]
"""
import argparse, json, os, statistics, subprocess, sys, time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_cpp_runner(model, threads, n_ctx):
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    vocab = llm.n_vocab()

    def last_argmax():
        # llama-cpp-python 0.3.36 leaves llm.scores empty without logits_all: read the
        # last position's logits from the context directly.
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(vocab,))))

    def run(prompt, n_decode):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        pre = len(prompt) / (time.perf_counter() - t0)
        llm.reset()
        llm.eval(prompt[:1])
        tok = last_argmax()
        t0 = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([tok])
            tok = last_argmax()
        dec = n_decode / (time.perf_counter() - t0)
        return pre, dec

    return run, vocab


def ours(binary, model, threads, n_prefill, n_decode):
    out = subprocess.check_output([binary, "bench", "--model", model, "--threads", str(threads),
                                   "--prefill-tokens", str(n_prefill), "--decode-tokens",
                                   str(n_decode), "--runs", "1", "--json"])
    r = json.loads(out)
    return r["prefill_tok_s"], r["decode_tok_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/edge-reason"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/out/cpu_vs_llama_cpp.json"))
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} is missing: run `cargo build --release` first")

    results = []
    for threads in a.threads:
        run, vocab = llama_cpp_runner(a.model, threads, a.prefill + a.decode + 8)
        rng = np.random.default_rng(0)
        prompt = [int(t) for t in rng.integers(0, vocab, a.prefill)]
        run(prompt[:32], 4)  # warm-up
        samples = {"ours": [], "llama.cpp": []}
        for _ in range(a.runs):
            samples["ours"].append(ours(a.binary, a.model, threads, a.prefill, a.decode))
            samples["llama.cpp"].append(run(prompt, a.decode))
        row = {"threads": threads}
        for name, s in samples.items():
            row[name] = {"prefill_tok_s": statistics.median(x[0] for x in s),
                         "decode_tok_s": statistics.median(x[1] for x in s)}
        row["decode_ratio"] = row["ours"]["decode_tok_s"] / row["llama.cpp"]["decode_tok_s"]
        row["prefill_ratio"] = row["ours"]["prefill_tok_s"] / row["llama.cpp"]["prefill_tok_s"]
        results.append(row)
        print(f"threads={threads}: decode ours {row['ours']['decode_tok_s']:.1f} tok/s, "
              f"llama.cpp {row['llama.cpp']['decode_tok_s']:.1f} tok/s, ratio {row['decode_ratio']:.2f}; "
              f"prefill ours {row['ours']['prefill_tok_s']:.1f}, llama.cpp "
              f"{row['llama.cpp']['prefill_tok_s']:.1f}, ratio {row['prefill_ratio']:.2f}", flush=True)
    import llama_cpp
    doc = {"model": os.path.basename(a.model), "runs": a.runs, "prefill_tokens": a.prefill,
           "decode_tokens": a.decode, "llama_cpp_python": llama_cpp.__version__,
           "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip(),
           "results": results}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
