#!/usr/bin/env bash
# Every benchmark of bench/, side by side on this machine, then docs/benchmarks.md and
# docs/benchmarks.png (bench/report.py). Called by `./build.sh bench`, after the native
# binary, pkg/ and the model are built; installs what only the benchmarks need:
#   bench/node_modules   wllama (npm ci in bench/)
#   .venv-bench          llama-cpp-python built as ../shared/TOOLCHAIN.md says, numpy, matplotlib, gguf
#   models/bench/        a random-weight model of Qwen2.5-0.5B's shapes (bench/make_model.py)
# Takes over an hour on 2 cores (the llama.cpp build is 10 minutes of it, once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=bench/out
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
BIN=target/release/edge-reason
say() { printf '==> %s\n' "$*" >&2; }
mkdir -p "$OUT"
# wgpu (probing for a GPU in bench-reason) wants a runtime dir, as in ./build.sh test.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}/edge-reason-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

[ -d bench/node_modules/@wllama/wllama ] || (say "installing wllama (npm ci in bench/)" && cd bench && npm ci --no-audit --no-fund)
if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import llama_cpp, matplotlib, gguf' 2>/dev/null; then
    say "building llama-cpp-python into .venv-bench (about 10 minutes)"
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -q numpy matplotlib gguf==0.19.0
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF" \
        .venv-bench/bin/pip install -q llama-cpp-python
fi

say "native CPU vs llama.cpp"
.venv-bench/bin/python bench/compare_llama_cpp.py --model "$M" --runs 5 --out "$OUT/cpu_vs_llama_cpp.json" >/dev/null
say "native CPU vs llama.cpp on the formats people download (./build.sh formats made them)"
for f in Q4_K_M Q8_0; do
    .venv-bench/bin/python bench/compare_llama_cpp.py --model "models/derived/SmolLM2-135M-Instruct.$f.gguf" \
        --runs 5 --out "$OUT/cpu_vs_llama_cpp_SmolLM2-135M.$f.json" >/dev/null
done
BIG=models/bench/qwen2.5-0.5b-shapes.Q4_K_M.gguf
[ -f "$BIG" ] || { say "making $BIG (random weights, Qwen2.5-0.5B's shapes)"; .venv-bench/bin/python bench/make_model.py --out "$BIG" >/dev/null; }
.venv-bench/bin/python bench/compare_llama_cpp.py --model "$BIG" --runs 3 --prefill 256 --decode 64 \
    --out "$OUT/cpu_vs_llama_cpp_qwen2.5-0.5b-shapes.Q4_K_M.json" >/dev/null
say "browser CPU and WebGPU vs wllama, and peak memory"
# WebGPU here is SwiftShader (seconds a token): a 32-token prompt and 4 tokens for it.
node bench/compare_browser.mjs --rounds 3 --gpu-prefill 32 --gpu-decode 4 --memory-steps 4 \
    --json "$OUT/browser_compare.json" >/dev/null
say "parallel candidates on the CPU (N = 2, 4, 8)"
for n in 2 4 8; do
    "$BIN" bench-reason --model "$M" --backend cpu --threads 2 --json --prompt-tokens 200 \
        --n "$n" --steps 16 --runs 3 > "$OUT/reason_n$n.json"
done
say "the native GPU path, where there is a hardware GPU"
bench/gpu.sh
say "time to the first reasoning token (100 and 1000-token prompts)"
for p in 100 1000; do
    "$BIN" bench-reason --model "$M" --backend cpu --threads 2 --json --prompt-tokens "$p" \
        --n 8 --steps 2 --runs 3 > "$OUT/ttft_$p.json"
done
say "parallel streams on WebGPU (SwiftShader here)"
node bench/browser_bench.mjs --backend webgpu --prefill-tokens 16 --decode-tokens 2 --runs 3 \
    --streams 1,2,4,8 > "$OUT/webgpu_streams.json"
.venv-bench/bin/python bench/report.py
