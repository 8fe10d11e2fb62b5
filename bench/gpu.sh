#!/usr/bin/env bash
# The native GPU path (wgpu: Vulkan, Metal or DX12; the same WGSL kernels the browser's
# WebGPU runs) on this machine's hardware GPU, for docs/benchmarks.md. Writes, into
# bench/out/ (bench/report.py reads them):
#   gpu_bench.json           edge-reason bench --backend gpu: prefill 512 and decode 128 tokens/s
#   gpu_reason_n{2,4,8}.json edge-reason bench-reason --backend gpu --n N: decode step, 1 vs N candidates
#   gpu_ttft_1000.json       bench-reason --prompt-tokens 1000: shared cache vs re-encoding
# Where the only GPU is a software one (lavapipe, SwiftShader), it writes nothing and
# removes those files: their figures would describe a CPU. Needs only the binary and
# the model (BIN=..., MODEL=... to point elsewhere), so it also runs alone on a machine
# lent for GPU measurements. Called by bench/run.sh; a minute or two on a GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT_DIR:-bench/out}
M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
BIN=${BIN:-target/release/edge-reason}
say() { printf '==> %s\n' "$*" >&2; }
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}/edge-reason-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
rm -f "$OUT"/gpu_bench.json "$OUT"/gpu_reason_n*.json "$OUT"/gpu_ttft_*.json

# `--backend auto` takes a hardware GPU when there is one, else the CPU.
probe=$("$BIN" bench --model "$M" --backend auto --json --prefill-tokens 8 --decode-tokens 2 --runs 1)
if ! grep -q '"backend":"gpu"' <<<"$probe"; then
    say "no hardware GPU here ($probe): no native GPU rows"
    exit 0
fi
say "native GPU: prefill and decode"
"$BIN" bench --model "$M" --backend gpu --json --prefill-tokens 512 --decode-tokens 128 --runs 5 \
    > "$OUT/gpu_bench.json"
say "native GPU: parallel candidates (N = 2, 4, 8)"
for n in 2 4 8; do
    "$BIN" bench-reason --model "$M" --backend gpu --json --prompt-tokens 200 --n "$n" --steps 32 \
        --runs 5 > "$OUT/gpu_reason_n$n.json"
done
say "native GPU: time to the first reasoning token (1000-token prompt)"
"$BIN" bench-reason --model "$M" --backend gpu --json --prompt-tokens 1000 --n 8 --steps 2 --runs 3 \
    > "$OUT/gpu_ttft_1000.json"
