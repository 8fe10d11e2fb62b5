#!/usr/bin/env node
// edge-reason's wasm CPU path and its WebGPU path against wllama (llama.cpp compiled to
// wasm) in headless Chromium: same GGUF, same server, prefill and greedy decode with EOS
// ignored. The configurations take turns, round after round, in one browser each (a
// fresh page per measurement), so machine noise falls on all of them alike; medians per
// configuration. Then the peak wasm memory of a reasoning run with 1 and with 8
// candidates on each backend, a fresh page each (wasm memory only grows).
//
//   node bench/compare_browser.mjs [--model /models/F.gguf] [--rounds 3] [--prefill 512] [--decode 128]
//        [--threads 1,2] [--gpu-prefill 512] [--gpu-decode 128] [--memory-n 1,8]
//        [--memory-prompt 500] [--memory-steps 8] [--json out.json]
//
// `--model` is a path the dev server serves (models/ is mounted at /models/: the
// default model, models/derived/ from ./build.sh formats, models/bench/ from
// bench/make_model.py). `--gpu-decode 0` leaves out the WebGPU path, `--memory-n ''` the memory runs. On
// SwiftShader (Chromium's WebGPU on the CPU) a token takes seconds: bench/run.sh gives
// the WebGPU runs, memory ones included, a short prompt (`--gpu-prefill`).
//
// Needs pkg/ (./build.sh wasm), the default model (./build.sh model), the browser test
// packages (./build.sh setup) and wllama (npm ci in bench/, which ./build.sh bench does).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from '../tests/browser/chromium.mjs';
import { start, defaultMounts } from '../www/serve.mjs';
import { parseArgs } from './args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const args = parseArgs({
  model: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', rounds: '3', prefill: '512', decode: '128', threads: '1,2', 'gpu-prefill': '', 'gpu-decode': '128',
  'memory-n': '1,8', 'memory-prompt': '500', 'memory-steps': '8', json: '', timeout: '1800',
});
const gpuPrefill = args['gpu-prefill'] || args.prefill;
const wllamaDir = path.join(here, 'node_modules', '@wllama', 'wllama', 'esm');
if (!fs.existsSync(wllamaDir)) {
  console.error('wllama is not installed: run ./build.sh bench (or npm ci in bench/)');
  process.exit(1);
}

const threads = args.threads.split(',').map(Number);
const configs = threads.flatMap((t) => [
  { engine: 'edge', backend: 'cpu', threads: t, prefill: args.prefill, decode: args.decode },
  { engine: 'wllama', backend: 'cpu', threads: t, prefill: args.prefill, decode: args.decode },
]);
if (Number(args['gpu-decode']) > 0) {
  configs.push({ engine: 'edge', backend: 'webgpu', threads: 1, prefill: gpuPrefill, decode: args['gpu-decode'] });
}
const memoryN = args['memory-n'].split(',').filter(Boolean).map(Number);

const server = await start({
  csp: false, // wllama starts its workers from blob: URLs
  port: 0,
  host: '127.0.0.1',
  mounts: [
    { prefix: '/wllama/', dir: wllamaDir },
    { prefix: '/bench/', dir: path.join(here, 'pages') },
    ...defaultMounts(root),
  ],
});

/** One measurement: a fresh browser, one page load of compare.html with `params`, its JSON. */
async function measure(params) {
  const browser = await launch(params.backend === 'webgpu' ? [...BASE_FLAGS, ...WEBGPU_FLAGS] : BASE_FLAGS);
  try {
    const { page } = browser;
    const q = new URLSearchParams({ runs: 1, model: args.model, ...params });
    await page.goto(`${server.url}bench/compare.html?${q}`);
    await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: Number(args.timeout) * 1000 });
    if ((await page.getAttribute('body', 'data-state')) === 'error') throw new Error(await page.textContent('[data-testid="error"]'));
    return JSON.parse(await page.textContent('[data-testid="result"]'));
  } finally {
    await browser.close();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = configs.map((c) => ({ ...c, samples: [] }));
const memory = [];
try {
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const r of results) {
      const out = await measure({ engine: r.engine, backend: r.backend, threads: r.threads, prefill: r.prefill, decode: r.decode });
      r.info = { engine: out.engine, backend: out.backend, device: out.device, threads: out.threads, threads_reason: out.threads_reason, multithread: out.multithread, webgpu_supported: out.webgpu_supported, cross_origin_isolated: out.cross_origin_isolated };
      r.samples.push({ load_s: out.load_s, ...out.runs[0] });
      console.error(`round ${round + 1}: ${r.engine} ${r.backend} x${r.threads}: prefill ${out.runs[0].prefill_tok_s.toFixed(1)} tok/s, decode ${out.runs[0].decode_tok_s.toFixed(1)} tok/s`);
    }
  }
  // Reasoning runs (bench-reason's): n candidates of `--memory-steps` steps after a
  // `--memory-prompt`-token prompt, or on WebGPU a `--gpu-prefill`-token one.
  for (const backend of Number(args['gpu-decode']) > 0 ? ['cpu', 'webgpu'] : ['cpu']) {
    for (const n of memoryN) {
      const prefill = backend === 'webgpu' ? gpuPrefill : args['memory-prompt'];
      const out = await measure({ engine: 'edge', mode: 'memory', backend, n, threads: 1, prefill, decode: args['memory-steps'] });
      memory.push(out);
      console.error(`memory: ${backend} (${out.device}), ${n} candidates: ${(out.memory_bytes / 2 ** 20).toFixed(1)} MiB of wasm memory`);
    }
  }
} finally {
  await server.close();
}

const summary = results.map((r) => ({
  engine: r.engine,
  backend: r.backend,
  threads: r.threads,
  info: r.info,
  prefill_tokens: r.samples[0].prefill_tokens,
  decode_tokens: r.samples[0].decode_tokens,
  load_s: median(r.samples.map((s) => s.load_s)),
  prefill_tok_s: median(r.samples.map((s) => s.prefill_tok_s)),
  decode_tok_s: median(r.samples.map((s) => s.decode_tok_s)),
  samples: r.samples,
}));
// edge-reason over wllama at the same thread count.
for (const s of summary.filter((s) => s.engine === 'edge' && s.backend === 'cpu')) {
  const w = summary.find((x) => x.engine === 'wllama' && x.threads === s.threads);
  s.decode_vs_wllama = s.decode_tok_s / w.decode_tok_s;
  s.prefill_vs_wllama = s.prefill_tok_s / w.prefill_tok_s;
}
const report = { model: args.model, rounds: Number(args.rounds), date: new Date().toISOString(), results: summary, memory };
if (args.json) fs.writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
console.log(JSON.stringify(report));
