#!/usr/bin/env python3
"""docs/benchmarks.md and docs/benchmarks.png from the JSON the benchmarks write into
bench/out/ (bench/run.sh runs them all; each section is left out when its JSON is):

  cpu_vs_llama_cpp.json    bench/compare_llama_cpp.py: native CPU vs llama.cpp
  cpu_vs_llama_cpp_*.json  the same on other GGUFs: the default model as Q4_K_M and Q8_0,
                           and a model of Qwen2.5-0.5B's shapes as Q4_K_M (bench/make_model.py)
  browser_compare.json     bench/compare_browser.mjs: wasm CPU and WebGPU paths vs wllama,
                           and the peak wasm memory of reasoning runs
  reason_n{2,4,8}.json     edge-reason bench-reason --n N: decode step, 1 vs N candidates
  ttft_{100,1000}.json     edge-reason bench-reason --prompt-tokens P: shared cache vs re-encoding
  webgpu_streams.json      bench/browser_bench.mjs --streams 1,2,4,8 (WebGPU)
  gpu_bench.json, gpu_reason_n{2,4,8}.json, gpu_ttft_1000.json
                           bench/gpu.sh: the same on the native GPU path, where the
                           machine has a hardware GPU

Every figure is a median of the runs the benchmark made, and every ratio compares two
engines or two modes measured in the same run on the same machine.

Usage: python3 bench/report.py [--out-dir bench/out] [--md docs/benchmarks.md] [--png docs/benchmarks.png]
"""
import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(out_dir, name):
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(value, target, more_is_better=True):
    met = value >= target if more_is_better else value <= target
    return f"{value:.2f}x (target {'≥' if more_is_better else '≤'} {target}x: {'met' if met else 'not met'})"


def native_section(doc):
    rows = [
        [r["threads"], f'{r["ours"]["decode_tok_s"]:.0f}', f'{r["llama.cpp"]["decode_tok_s"]:.0f}',
         verdict(r["decode_ratio"], 1.0), f'{r["ours"]["prefill_tok_s"]:.0f}',
         f'{r["llama.cpp"]["prefill_tok_s"]:.0f}', f'{r["prefill_ratio"]:.2f}x']
        for r in doc["results"]
    ]
    return (
        "## Native CPU: edge-reason vs llama.cpp\n\n"
        f"`bench/compare_llama_cpp.py`: {doc['model']}, prefill {doc['prefill_tokens']} tokens, "
        f"decode {doc['decode_tokens']}, medians of {doc['runs']} alternating runs, llama-cpp-python "
        f"{doc['llama_cpp_python']}, {doc['cpu']}.\n\n"
        + table(["threads", "decode ours (tok/s)", "decode llama.cpp", "decode ratio",
                 "prefill ours", "prefill llama.cpp", "prefill ratio"], rows)
    )


def browser_section(doc, native):
    cpu = {(r["engine"], r["threads"]): r for r in doc["results"] if r.get("backend", "cpu") == "cpu"}
    rows = []
    for (engine, threads), r in sorted(cpu.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if engine != "edge":
            continue
        w = cpu.get(("wllama", threads))
        llama = next((x for x in (native or {}).get("results", []) if x["threads"] == threads), None)
        vs_native = (verdict(r["decode_tok_s"] / llama["llama.cpp"]["decode_tok_s"], 0.5)
                     if llama else "not measured in this run")
        rows.append([f"CPU, {threads} thread{'s' if threads > 1 else ''}", f'{r["decode_tok_s"]:.1f}',
                     f'{w["decode_tok_s"]:.1f}' if w else "-",
                     verdict(r["decode_vs_wllama"], 3.0) if w else "-", vs_native,
                     f'{r["prefill_tok_s"]:.1f}', f'{w["prefill_tok_s"]:.1f}' if w else "-",
                     f'{r["load_s"]:.1f} / {w["load_s"]:.1f}' if w else f'{r["load_s"]:.1f}'])
    gpu = next((r for r in doc["results"] if r.get("backend") == "webgpu"), None)
    w1 = cpu.get(("wllama", 1))
    if gpu:
        rows.append([f"WebGPU ({gpu['info'].get('device', '?')})", f'{gpu["decode_tok_s"]:.1f}',
                     f'{w1["decode_tok_s"]:.1f} (1 thread)' if w1 else "-",
                     f'{gpu["decode_tok_s"] / w1["decode_tok_s"]:.2f}x' if w1 else "-", "-",
                     f'{gpu["prefill_tok_s"]:.1f}', f'{w1["prefill_tok_s"]:.1f}' if w1 else "-",
                     f'{gpu["load_s"]:.1f} / {w1["load_s"]:.1f}' if w1 else f'{gpu["load_s"]:.1f}'])
    info = (w1 or {}).get("info", {})
    text = (
        "## Browser: edge-reason (wasm SIMD128 and threads, or WebGPU) vs wllama\n\n"
        f"`bench/compare_browser.mjs`: headless Chromium, the same GGUF from the same local server, "
        f"{doc['results'][0]['prefill_tokens']}-token prompt (wllama's text prompt: "
        f"{(w1 or {}).get('prefill_tokens', '?')} tokens), "
        f"{doc['results'][0]['decode_tokens']} greedy tokens with EOS ignored, a fresh browser per "
        f"measurement, medians of {doc['rounds']} rounds. wllama runs with `n_gpu_layers: 0` "
        f"(its WebGPU build needs `shader-f16`; `isSupportWebGPU()` said {json.dumps(info.get('webgpu_supported'))})."
    )
    if gpu:
        text += (f" Our WebGPU row decodes {gpu['decode_tokens']} tokens; where its adapter is "
                 "SwiftShader, Chromium's WebGPU on the CPU, it says nothing about a GPU and is "
                 "listed for completeness.")
    return text + "\n\n" + table(["path", "decode ours (tok/s)", "decode wllama", "ours / wllama",
                                  "ours / native llama.cpp", "prefill ours", "prefill wllama",
                                  "load s ours / wllama"], rows)


def memory_section(doc, webgpu):
    runs = doc.get("memory", [])
    gpu_bytes = (webgpu or {}).get("gpu_buffer_bytes", {})
    rows = [[f"WebGPU ({r['device']})" if r["backend"] == "webgpu" else "CPU", r["n"],
             r["prompt_tokens"], f"{r['memory_bytes'] / 2**20:.1f}",
             f"{r['kv_bytes_shared'] / 2**20:.1f}" + (" (GPU)" if r["backend"] == "webgpu" else ""),
             f"{r.get('lora_bytes', 0) / 2**20:.1f}",
             f"{(gpu_bytes[str(r['n'])] + r.get('lora_bytes', 0)) / 2**20:.1f}"
             if r["backend"] == "webgpu" and str(r["n"]) in gpu_bytes else "-"]
            for r in runs]
    adapter = runs[0].get("lora", "rank 16") if runs else ""
    return (
        "## Memory\n\n"
        "Peak wasm memory of a page that loads the default model and runs the reasoning benchmark "
        "(`engine.benchReason`) with N candidates after a prompt, "
        f"{runs[0]['candidate_tokens']} tokens each, with a {adapter} adapter loaded (INT8 in memory, as the "
        "shipped one is), one fresh page per row "
        "(`bench/compare_browser.mjs`; wasm memory only grows, so its final size is its peak)."
        + (" GPU buffers: the weights plus a session of N candidates, from the WebGPU streams "
           f"run below ({webgpu['prefill_tokens']}-token prompt), plus the adapter." if webgpu else "")
        + "\n\n"
        + table(["path", "N", "prompt tokens", "peak wasm memory (MiB)", "KV cache (MiB)",
                 "adapter (MiB)", "GPU buffers (MiB)"], rows)
    )


def scaling_section(docs, title="Parallel candidates (CPU)", target=None, level="##"):
    """Decode step of 1 vs N candidates; `target`: the gain N = 8 should reach."""
    rows = []
    for n, d in docs:
        one, many = d["step"]["1"], d["step"][str(n)]
        gain = many["lora_tok_s"] / one["lora_tok_s"]
        rows.append([n, f'{one["lora_ms"]:.1f}', f'{many["lora_ms"]:.1f}',
                     f'{one["lora_tok_s"]:.0f} → {many["lora_tok_s"]:.0f}',
                     verdict(gain, target) if target and n == 8 else f'{gain:.2f}x',
                     f'{n * one["lora_ms"] / many["lora_ms"]:.2f}x'])
    d0 = docs[0][1]
    cpu = d0["backend"] == "cpu"
    options = f"--backend {d0['backend']}" + (f" --threads {d0['threads']}" if cpu else "")
    return (
        f"{level} {title}: one batched step vs N sequential generations\n\n"
        f"`edge-reason bench-reason {options} --n N`" + ("" if cpu else f" on `{d0.get('device', '?')}`") + ": "
        f"{d0['prompt_tokens']}-token prompt, adapter on ({d0['lora']}), medians of {d0['runs']}. "
        "N sequential generations (what engines without batched candidates do) take N single "
        "steps per token of each candidate.\n\n"
        + table(["N", "step N=1 (ms)", "step N (ms)", "total tok/s", "throughput gain",
                 "vs N sequential"], rows)
    )


def ttft_section(docs, level="##"):
    rows = [[d["prompt_tokens"], f'{d["ttft_shared_ms"]:.0f}', f'{d["ttft_reencode_ms"]:.0f}',
             verdict(d["ttft_speedup"], 1.8) if d["prompt_tokens"] >= 1000 else f'{d["ttft_speedup"]:.2f}x']
            for d in docs]
    return (
        f"{level} Time to the first reasoning token: shared prompt cache vs re-encoding\n\n"
        "`edge-reason bench-reason --prompt-tokens P`: from the request, the base prefill and "
        "then the adapter's first token from the shared cache, against prefilling the prompt "
        "again with the adapter on.\n\n"
        + table(["prompt tokens", "shared (ms)", "re-encoding (ms)", "speedup"], rows)
    )


def gpu_section(bench, scaling, ttft):
    """The native GPU path on a hardware GPU (bench/gpu.sh)."""
    device = (bench or {}).get("adapter") or (scaling[0][1]["device"] if scaling else "?")
    parts = [f"## The native GPU path on a hardware GPU ({device})\n\n"
             "wgpu on the machine's GPU API, running the WGSL kernels the browser's WebGPU runs "
             "(`bench/gpu.sh`)."]
    if bench:
        parts.append(f"`edge-reason bench --backend gpu`, KV cache {bench['kv_cache']}, medians of "
                     f"{bench['runs']}: prefill {bench['prefill_tok_s']:.0f} tokens/s "
                     f"({bench['prefill_tokens']}-token prompt), decode {bench['decode_tok_s']:.0f} tokens/s "
                     f"({bench['decode_tokens']} tokens, one stream).")
    text = "\n\n".join(parts)
    if scaling:
        text += "\n\n" + scaling_section(scaling, "Parallel candidates on the GPU", target=4.0, level="###")
    if ttft:
        text += "\n\n" + ttft_section(ttft, level="###")
    return text


def webgpu_section(doc):
    steps = doc.get("stream_step_ms", {})
    memory = doc.get("gpu_buffer_bytes", {})
    one = steps.get("1")
    rows = [[n, f"{ms:.0f}", f"{int(n) * one / ms:.2f}x" if one else "-",
             f"{memory[n] / 2**20:.1f}" if n in memory else "-"]
            for n, ms in sorted(steps.items(), key=lambda kv: int(kv[0]))]
    return (
        "## Parallel streams on WebGPU\n\n"
        f"`node bench/browser_bench.mjs --streams 1,2,4,8` on `{doc.get('adapter', '?')}`: decode "
        "step time per number of streams over a shared prefix; the gain is N x step(1) / "
        "step(N), total tokens/s over one stream (target ≥ 4x at N = 8 on a hardware GPU; "
        "SwiftShader is a CPU). GPU memory: the weights plus every buffer of a session with "
        f"a {doc.get('prefill_tokens', '?')}-token prompt and N candidates of "
        f"{doc.get('decode_tokens', '?')} tokens.\n\n"
        + table(["streams", "step (ms)", "total tok/s vs 1 stream", "GPU buffers (MiB)"], rows)
    )


def formats_section(docs):
    rows = []
    for doc in docs:
        for r in doc["results"]:
            rows.append([doc["model"], r["threads"], f'{r["ours"]["decode_tok_s"]:.0f}',
                         f'{r["llama.cpp"]["decode_tok_s"]:.0f}', verdict(r["decode_ratio"], 1.0),
                         f'{r["ours"]["prefill_tok_s"]:.0f}', f'{r["llama.cpp"]["prefill_tok_s"]:.0f}',
                         verdict(r["prefill_ratio"], 1.0)])
    runs = sorted({d["runs"] for d in docs})
    return (
        "## Native CPU on the formats people download\n\n"
        "`bench/compare_llama_cpp.py --model M`, the same way as above (medians of "
        f"{'/'.join(map(str, runs))} alternating runs): the default model as llama.cpp's Q4_K_M "
        "and Q8_0 (`./build.sh formats`), and a random-weight model of Qwen2.5-0.5B's shapes "
        "as Q4_K_M (`bench/make_model.py`; prefill 256, decode 64).\n\n"
        + table(["GGUF", "threads", "decode ours (tok/s)", "decode llama.cpp", "decode ratio",
                 "prefill ours", "prefill llama.cpp", "prefill ratio"], rows)
    )


def chart(path, native, browser):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, ours, theirs, labels = [], [], [], []
    for r in (native or {}).get("results", []):
        groups.append(f"native\n{r['threads']} thr")
        ours.append(r["ours"]["decode_tok_s"])
        theirs.append(r["llama.cpp"]["decode_tok_s"])
        labels.append("llama.cpp")
    by = {(r["engine"], r["threads"]): r for r in (browser or {}).get("results", []) if r.get("backend", "cpu") == "cpu"}
    for (engine, threads), r in sorted(by.items()):
        if engine == "edge" and ("wllama", threads) in by:
            groups.append(f"browser\n{threads} thr")
            ours.append(r["decode_tok_s"])
            theirs.append(by[("wllama", threads)]["decode_tok_s"])
            labels.append("wllama")
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="edge-reason", color="#2b6cb0")
    ax.bar([x + 0.2 for x in xs], theirs, 0.4, label="llama.cpp (native) / wllama (browser)", color="#a0aec0")
    for x, a, b in zip(xs, ours, theirs):
        ax.text(x, max(a, b) * 1.02, f"{a / b:.1f}x", ha="center", fontsize=9)
    ax.set_ylim(0, max(ours + theirs) * 1.4)  # room for the legend above the bars
    ax.set_xticks(list(xs), groups)
    ax.set_ylabel("decode tokens/s")
    ax.set_title("SmolLM2-135M Q4_1, CPU decode, same machine, same run")
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    fig.tight_layout()
    fig.savefig(path)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "benchmarks.png"))
    a = ap.parse_args()
    native = load(a.out_dir, "cpu_vs_llama_cpp.json")
    formats = [load(a.out_dir, f) for f in sorted(os.listdir(a.out_dir)) if f.startswith("cpu_vs_llama_cpp_")] \
        if os.path.isdir(a.out_dir) else []
    browser = load(a.out_dir, "browser_compare.json")
    scaling = [(n, d) for n in (2, 4, 8) if (d := load(a.out_dir, f"reason_n{n}.json"))]
    ttft = [d for p in (100, 1000) if (d := load(a.out_dir, f"ttft_{p}.json"))]
    webgpu = load(a.out_dir, "webgpu_streams.json")
    gpu_bench = load(a.out_dir, "gpu_bench.json")
    gpu_scaling = [(n, d) for n in (2, 4, 8) if (d := load(a.out_dir, f"gpu_reason_n{n}.json"))]
    gpu_ttft = [d for d in [load(a.out_dir, "gpu_ttft_1000.json")] if d]

    parts = ["# Benchmarks\n\nWritten by `bench/report.py` from `bench/out/` (run everything with "
             "`./build.sh bench`). Medians; every ratio is two engines or two modes measured side "
             "by side in one run on the same machine."]
    if chart(a.png, native, browser):
        parts.append(f"![decode tokens/s]({os.path.basename(a.png)})")
    if native:
        parts.append(native_section(native))
    if formats:
        parts.append(formats_section(formats))
    if browser:
        parts.append(browser_section(browser, native))
    if browser and browser.get("memory"):
        parts.append(memory_section(browser, webgpu))
    if scaling:
        parts.append(scaling_section(scaling))
    if ttft:
        parts.append(ttft_section(ttft))
    if webgpu:
        parts.append(webgpu_section(webgpu))
    if gpu_bench or gpu_scaling:
        parts.append(gpu_section(gpu_bench, gpu_scaling, gpu_ttft))
    else:
        parts.append("No native GPU rows: `bench/gpu.sh` writes them on a machine with a hardware GPU, "
                     "where the N = 8 ≥ 4x target is measured (the WebGPU rows above run on SwiftShader, a CPU).")
    missing = [name for name, d in [("cpu_vs_llama_cpp.json", native), ("browser_compare.json", browser),
                                    ("reason_n*.json", scaling), ("ttft_*.json", ttft),
                                    ("webgpu_streams.json", webgpu)] if not d]
    if missing:
        parts.append("Not in this report (no JSON in bench/out/): " + ", ".join(f"`{m}`" for m in missing) + ".")
    os.makedirs(os.path.dirname(a.md), exist_ok=True)
    with open(a.md, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print(f"wrote {a.md}" + (f" and {a.png}" if native or browser else ""))


if __name__ == "__main__":
    main()
