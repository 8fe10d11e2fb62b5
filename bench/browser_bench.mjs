#!/usr/bin/env node
// The browser benchmark, headless: opens www/bench.html in Chromium (WebGPU through
// SwiftShader) and prints its JSON, the same shape as `edge-reason bench --json`.
//
//   node bench/browser_bench.mjs [--backend auto|webgpu|cpu] [--prefill-tokens 512]
//        [--decode-tokens 128] [--runs 3] [--streams 1,2,4,8] [--profile 1]
//        [--timeout 900]
//
// Needs pkg/ (./build.sh wasm), the default model (./build.sh model) and the browser
// test packages (./build.sh setup). On SwiftShader the absolute figures mean little
// (it is the CPU); the M-stream ratio and correctness are what count there.

import { BASE_FLAGS, WEBGPU_FLAGS, launch } from '../tests/browser/chromium.mjs';
import { start } from '../www/serve.mjs';
import { parseArgs } from './args.mjs';

const args = parseArgs({ backend: 'auto', 'prefill-tokens': '512', 'decode-tokens': '128', runs: '3', streams: '1,2,4,8', profile: '0', timeout: '900' });

const server = await start({ port: 0, host: '127.0.0.1' });
// Timestamps at full resolution (Chromium rounds them to 100 us otherwise).
const browser = await launch([...BASE_FLAGS, ...WEBGPU_FLAGS, '--enable-webgpu-developer-features']);
try {
  const { page } = browser;
  page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
  const q = new URLSearchParams({
    run: '1',
    backend: args.backend,
    prefill_tokens: args['prefill-tokens'],
    decode_tokens: args['decode-tokens'],
    runs: args.runs,
    streams: args.streams,
    profile: args.profile,
  });
  await page.goto(`${server.url}bench.html?${q}`);
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', {
    timeout: Number(args.timeout) * 1000,
  });
  const error = await page.textContent('[data-testid="error"]');
  if (await page.getAttribute('body', 'data-state') === 'error') throw new Error(error);
  console.log(JSON.stringify(JSON.parse(await page.textContent('[data-testid="bench-json"]'))));
} finally {
  await browser.close();
  await server.close();
}
