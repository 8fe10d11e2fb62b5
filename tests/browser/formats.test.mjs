// The GGUF formats people download, in the browser: the default model as Q4_K_M (Q4_K,
// Q5_0, Q6_K and Q8_0 tensors), Q5_K_M (Q5_K, Q5_1, Q6_K, Q8_0), Q6_K and Q8_0
// (models/derived/, made by `./build.sh formats`) loaded by the wasm engine on the CPU
// path (SIMD128) and on WebGPU (SwiftShader), against llama.cpp's logits on the same
// files (tests/fixtures/smollm2_quants.json) with the native tests' bounds
// (tests/it/parity.rs, tests/it/gpu.rs): last-position logits within the bound over
// llama.cpp's top 16, and the same top-1 wherever llama.cpp's own top-2 gap exceeds it.
// SwiftShader takes seconds per position, so WebGPU gets the two shortest prompts; the
// native tests check every prompt and greedy continuation through the same WGSL.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from './chromium.mjs';
import { start } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const fixture = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'fixtures', 'smollm2_quants.json'), 'utf8'));
const BOUND = { cpu: 1.0, webgpu: 1.25 };

let server;
before(async () => {
  server = await start({ port: 0, host: '127.0.0.1' });
});
after(async () => {
  await server?.close();
});

/** Logits of `prompts` (id lists) at their last position, for each format's file, on
 *  `backend`: `[{format, backend, logits: [[logit of each of the fixture's top ids], argmax]}]`. */
async function run(page, backend, prompts) {
  return page.evaluate(
    async ({ backend, formats }) => {
      const m = await import('/pkg/edge_reason.js');
      await m.default();
      const out = [];
      for (const f of formats) {
        const bytes = new Uint8Array(await (await fetch(`/models/derived/${f.file}`)).arrayBuffer());
        const engine = await m.Engine.load(bytes, { backend });
        const rows = [];
        for (const p of f.prompts) {
          const l = await engine.logits(Uint32Array.from(p.ids));
          let best = 0;
          for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
          rows.push({ argmax: best, top: p.top.map(([id]) => l[id]) });
        }
        out.push({ name: f.name, backend: engine.backend.backend, rows });
        engine.free();
      }
      return out;
    },
    { backend, formats: fixture.formats.map((f) => ({ name: f.name, file: f.file, prompts: prompts(f) })) },
  );
}

function check(got, backend, prompts) {
  for (const [i, f] of fixture.formats.entries()) {
    const g = got[i];
    assert.equal(g.backend, backend);
    let worst = 0;
    prompts(f).forEach((p, k) => {
      const diff = Math.max(...p.top.map(([, want], j) => Math.abs(g.rows[k].top[j] - want)));
      worst = Math.max(worst, diff);
      assert.ok(diff <= BOUND[backend], `${f.name} on ${backend}, prompt of ${p.ids.length}: max |logit diff| ${diff}`);
      const gap = p.top[0][1] - p.top[1][1];
      assert.ok(
        g.rows[k].argmax === p.top[0][0] || gap < BOUND[backend],
        `${f.name} on ${backend}: top-1 ${g.rows[k].argmax}, llama.cpp's ${p.top[0][0]} by ${gap}`,
      );
    });
    console.log(`# ${f.name} on ${backend}: worst |logit - llama.cpp| ${worst.toFixed(3)} over ${prompts(f).length} prompts`);
  }
}

describe('the formats people download, in the browser', { timeout: 1_200_000 }, () => {
  for (const f of fixture.formats) {
    assert.ok(fs.existsSync(path.join(root, 'models', 'derived', f.file)), `models/derived/${f.file} is missing: run ./build.sh formats`);
  }

  test('on the CPU path (wasm SIMD128)', async () => {
    const short = (f) => f.prompts.filter((p) => p.ids.length <= 12);
    const browser = await launch(BASE_FLAGS);
    try {
      await browser.page.goto(server.url, { waitUntil: 'load' });
      check(await run(browser.page, 'cpu', short), 'cpu', short);
    } finally {
      await browser.close();
    }
  });

  test('on WebGPU (SwiftShader)', async () => {
    const shortest = (f) => [...f.prompts].sort((a, b) => a.ids.length - b.ids.length).slice(0, 2);
    const browser = await launch([...BASE_FLAGS, ...WEBGPU_FLAGS]);
    try {
      await browser.page.goto(server.url, { waitUntil: 'load' });
      check(await run(browser.page, 'webgpu', shortest), 'webgpu', shortest);
    } finally {
      await browser.close();
    }
  });
});
