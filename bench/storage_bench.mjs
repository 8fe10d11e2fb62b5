#!/usr/bin/env node
// The storage benchmark: the default model from the dev server into OPFS and onto
// WebGPU (SwiftShader) through the engine's worker, side by side with the server's raw
// throughput, medians over --runs fresh browsers.
//
//   node bench/storage_bench.mjs [--runs 3] [--chunk-bytes 8388608] [--concurrency 4]
//
// Prints JSON:
//   raw_mb_s         the same file fetched by Node from the same server (the ceiling)
//   page_fetch_mb_s  fetched by the page and discarded (the browser's network path)
//   download_mb_s    download() into OPFS: Range chunks, SHA-256 per chunk, write, flush,
//                    whole-file verification
//   warm_start_ms    load() of the stored model in a fresh worker, to ready
//   wasm_memory_mb   wasm memory after that load (its peak), against the budget of the
//                    largest tensor + 64 MiB
// Needs pkg/ (./build.sh wasm), the default model (./build.sh model) and the browser
// test packages (./build.sh setup).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from '../tests/browser/chromium.mjs';
import { start } from '../www/serve.mjs';
import { parseArgs } from './args.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const URL_PATH = `/models/${MODEL}`;
const args = parseArgs({ runs: '3', 'chunk-bytes': String(8 << 20), concurrency: '4' });
const size = fs.statSync(path.join(root, 'models', MODEL)).size;
const MB = 1e6;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const server = await start({ port: 0, host: '127.0.0.1' });
const url = new URL(URL_PATH, server.url).href;

async function rawFetch() {
  const t0 = performance.now();
  const res = await fetch(url);
  let n = 0;
  for await (const piece of res.body) n += piece.length;
  if (n !== size) throw new Error(`raw fetch got ${n} of ${size} bytes`);
  return size / MB / ((performance.now() - t0) / 1000);
}

const rows = [];
try {
  for (let run = 0; run < Number(args.runs); run++) {
    const raw = await rawFetch();
    const browser = await launch([...BASE_FLAGS, ...WEBGPU_FLAGS]);
    try {
      const { page } = browser;
      await page.goto(server.url, { waitUntil: 'load' });
      const r = await page.evaluate(
        async ({ url, chunkBytes, concurrency }) => {
          const t0 = performance.now();
          const res = await fetch(url, { cache: 'no-store' });
          const reader = res.body.getReader();
          let n = 0;
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            n += value.length;
          }
          const pageFetchS = (performance.now() - t0) / 1000;
          const { createEngine } = await import('/pkg/index.js');
          const downloader = await createEngine();
          const t1 = performance.now();
          const stored = await downloader.download({ url, manifestUrl: `${url}.manifest.json`, chunkBytes, concurrency });
          const downloadS = (performance.now() - t1) / 1000;
          downloader.terminate();
          // Warm start: a fresh worker, the model already in OPFS.
          const engine = await createEngine();
          const before = (await engine.info()).memoryBytes;
          const t2 = performance.now();
          const loaded = await engine.load({ url });
          const warmMs = performance.now() - t2;
          const g = await engine.generate('Hello', { max_tokens: 4 });
          engine.terminate();
          return { n, pageFetchS, downloadS, warmMs, fromCache: loaded.fromCache, memory: loaded.memoryBytes, before, backend: loaded.backend.backend, tokens: g.ids.length, sha256: stored.sha256 };
        },
        { url, chunkBytes: Number(args['chunk-bytes']), concurrency: Number(args.concurrency) },
      );
      if (!r.fromCache || r.tokens !== 4) throw new Error(`unexpected run: ${JSON.stringify(r)}`);
      rows.push({ raw, page: size / MB / r.pageFetchS, download: size / MB / r.downloadS, warm: r.warmMs, memory: r.memory, before: r.before, backend: r.backend });
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}

const largest = (49152 * 576 / 32) * 34; // token_embd, Q8_0
console.log(
  JSON.stringify({
    model: MODEL,
    bytes: size,
    runs: rows.length,
    chunk_bytes: Number(args['chunk-bytes']),
    concurrency: Number(args.concurrency),
    backend: rows[0]?.backend,
    raw_mb_s: median(rows.map((r) => r.raw)),
    page_fetch_mb_s: median(rows.map((r) => r.page)),
    download_mb_s: median(rows.map((r) => r.download)),
    download_vs_raw: median(rows.map((r) => r.download / r.raw)),
    warm_start_ms: median(rows.map((r) => r.warm)),
    wasm_memory_mb: median(rows.map((r) => r.memory)) / 2 ** 20,
    wasm_memory_before_load_mb: median(rows.map((r) => r.before)) / 2 ** 20,
    wasm_memory_budget_mb: (largest + 64 * 2 ** 20) / 2 ** 20,
  }),
);
