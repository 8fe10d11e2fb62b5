#!/usr/bin/env node
// edge-reason's wasm CPU path against wllama (llama.cpp compiled to wasm) in headless
// Chromium: same GGUF, same server, prefill and greedy decode with EOS ignored. The
// configurations take turns, round after round, in one browser each (a fresh page per
// measurement), so machine noise falls on all of them alike; medians per configuration.
//
//   node bench/compare_browser.mjs [--rounds 3] [--prefill 512] [--decode 128]
//        [--threads 1,2] [--json out.json]
//
// Needs pkg/ (./build.sh wasm), the default model (./build.sh model), the browser test
// packages (./build.sh setup) and wllama (npm ci in bench/, which ./build.sh bench does).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, launch } from '../tests/browser/chromium.mjs';
import { start, defaultMounts } from '../www/serve.mjs';
import { parseArgs } from './args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const args = parseArgs({ rounds: '3', prefill: '512', decode: '128', threads: '1,2', json: '', timeout: '1800' });
const wllamaDir = path.join(here, 'node_modules', '@wllama', 'wllama', 'esm');
if (!fs.existsSync(wllamaDir)) {
  console.error('wllama is not installed: run ./build.sh bench (or npm ci in bench/)');
  process.exit(1);
}

const threads = args.threads.split(',').map(Number);
const configs = threads.flatMap((t) => [{ engine: 'edge', threads: t }, { engine: 'wllama', threads: t }]);

const server = await start({
  port: 0,
  host: '127.0.0.1',
  mounts: [
    { prefix: '/wllama/', dir: wllamaDir },
    { prefix: '/bench/', dir: path.join(here, 'pages') },
    ...defaultMounts(root),
  ],
});

/** One measurement: a fresh browser, one page load, its JSON. */
async function measure(c) {
  const browser = await launch(BASE_FLAGS);
  try {
    const { page } = browser;
    const q = new URLSearchParams({ engine: c.engine, threads: c.threads, prefill: args.prefill, decode: args.decode, runs: 1 });
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
try {
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const r of results) {
      const out = await measure(r);
      r.info = { engine: out.engine, threads: out.threads, threads_reason: out.threads_reason, multithread: out.multithread, webgpu_supported: out.webgpu_supported, cross_origin_isolated: out.cross_origin_isolated };
      r.samples.push({ load_s: out.load_s, ...out.runs[0] });
      console.error(`round ${round + 1}: ${r.engine} x${r.threads}: prefill ${out.runs[0].prefill_tok_s.toFixed(1)} tok/s, decode ${out.runs[0].decode_tok_s.toFixed(1)} tok/s`);
    }
  }
} finally {
  await server.close();
}

const summary = results.map((r) => ({
  engine: r.engine,
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
for (const s of summary.filter((s) => s.engine === 'edge')) {
  const w = summary.find((x) => x.engine === 'wllama' && x.threads === s.threads);
  s.decode_vs_wllama = s.decode_tok_s / w.decode_tok_s;
  s.prefill_vs_wllama = s.prefill_tok_s / w.prefill_tok_s;
}
const report = { rounds: Number(args.rounds), date: new Date().toISOString(), results: summary };
if (args.json) fs.writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
console.log(JSON.stringify(report));
