// The npm package as a user gets it: `npm pack` of pkg/, unpacked into a fresh folder
// as node_modules/edge-reason, imported by a page that knows nothing of this repository,
// and run in headless Chromium (createEngine, load with progress, a short generation,
// chat.completions.create).

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, launch } from './chromium.mjs';
import { start } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const modelPath = path.join(root, 'models', MODEL_NAME);

let dir;
let server;
let packed;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-package-'));
  const [out] = JSON.parse(execFileSync('npm', ['pack', path.join(root, 'pkg'), '--pack-destination', dir, '--json'], { encoding: 'utf8' }));
  packed = out;
  const modules = path.join(dir, 'app', 'node_modules', 'edge-reason');
  fs.mkdirSync(modules, { recursive: true });
  execFileSync('tar', ['-xzf', path.join(dir, out.filename), '-C', modules, '--strip-components=1']);
  fs.writeFileSync(path.join(dir, 'app', 'index.html'), '<!doctype html><meta charset="utf-8"><title>app</title>\n');
  server = await start({
    port: 0,
    host: '127.0.0.1',
    mounts: [
      { prefix: '/models/', dir: path.join(root, 'models') },
      { prefix: '/reasoning/', dir: path.join(root, 'www', 'reasoning') },
      { prefix: '/', dir: path.join(dir, 'app') },
    ],
  });
});

after(async () => {
  await server?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the npm package', { timeout: 600_000 }, () => {
  test('npm pack holds a proper ES module package with types, the worker and the wasm', () => {
    const files = packed.files.map((f) => f.path);
    const want = [
      'package.json', 'README.md', 'LICENSE', 'index.js', 'index.d.ts', 'worker.js', 'worker-threads.js', 'pool-worker.js',
      'edge_reason.js', 'edge_reason.d.ts', 'edge_reason_bg.wasm', 'threads/edge_reason.js', 'threads/edge_reason_bg.wasm',
      'reasoning/adapter/adapter_config.json', 'reasoning/adapter/adapter_model.safetensors',
      'reasoning/switcher/switcher.json', 'reasoning/switcher/switcher.safetensors',
    ];
    for (const f of want) {
      assert.ok(files.includes(f), `${f} is in the tarball: ${files.join(', ')}`);
    }
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'app', 'node_modules', 'edge-reason', 'package.json'), 'utf8'));
    assert.equal(pkg.name, 'edge-reason');
    assert.match(pkg.version, /^\d+\.\d+\.\d+/);
    assert.equal(pkg.type, 'module');
    assert.equal(pkg.types, './index.d.ts');
    assert.equal(pkg.exports['.'].import, './index.js');
    assert.equal(pkg.license, 'Apache-2.0');
    // Every export names a file in the package ("./reasoning/*" a folder of them).
    for (const [key, target] of Object.entries(pkg.exports)) {
      for (const t of typeof target === 'string' ? [target] : Object.values(target)) {
        const file = t.replace('/*', '');
        assert.ok(fs.existsSync(path.join(dir, 'app', 'node_modules', 'edge-reason', file)), `export ${key} -> ${t}`);
      }
    }
    // The npm README is for npm users: it says how to install, not how to build this repository.
    const readme = fs.readFileSync(path.join(dir, 'app', 'node_modules', 'edge-reason', 'README.md'), 'utf8');
    assert.match(readme, /npm install edge-reason/);
    assert.doesNotMatch(readme, /build\.sh/);
    // Every relative import of every module resolves to a file in the package.
    const base = path.join(dir, 'app', 'node_modules', 'edge-reason');
    for (const f of files.filter((f) => f.endsWith('.js'))) {
      const text = fs.readFileSync(path.join(base, f), 'utf8');
      for (const m of text.matchAll(/(?:import|export)\s*(?:[^'";]*?\sfrom\s*)?['"](\.[^'"]+)['"]/g)) {
        assert.ok(fs.existsSync(path.resolve(path.dirname(path.join(base, f)), m[1])), `${f} imports ${m[1]}`);
      }
    }
  });

  test('a fresh page imports the unpacked package, loads the model with progress and answers', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    const browser = await launch(BASE_FLAGS);
    try {
      const { page } = browser;
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(server.url, { waitUntil: 'load' });
      const out = await page.evaluate(async (url) => {
        const { createEngine } = await import('/node_modules/edge-reason/index.js');
        const engine = await createEngine();
        const phases = new Set();
        const loaded = await engine.load({ url, onProgress: (p) => phases.add(p.phase) });
        const g = await engine.generate('The capital of France is', { max_tokens: 3 });
        // The README's example: the shipped heads, then n candidates with reasoning.
        await engine.loadAdapter({ url: '/reasoning/adapter/' });
        await engine.loadSwitcher({ url: '/reasoning/switcher/' });
        const r = await engine.chat.completions.create({
          messages: [{ role: 'user', content: 'Tom has 12 apples. He buys 30 more. He gives 5 to Ann. How many apples does Tom have now?' }],
          n: 2,
          temperature: 0.7,
          seed: 1,
          reasoning: { mode: 'auto', budget: 4, answer_tokens: 3 },
        });
        engine.terminate();
        return {
          backend: loaded.backend.backend,
          phases: [...phases],
          ids: g.ids,
          route: r.route,
          choices: r.choices.map((c) => ({ content: c.message.content, reasoning: c.message.reasoning_content, finish: c.finish_reason })),
          vote: r.vote,
        };
      }, `/models/${MODEL_NAME}`);
      assert.equal(out.backend, 'cpu', 'no WebGPU flags: the CPU fallback');
      assert.deepEqual(out.phases, ['download', 'verify', 'upload', 'ready']);
      assert.equal(out.ids.length, 3);
      // The switcher sends the word problem to reasoning: two candidates, then the vote.
      assert.equal(out.route.mode, 'reason', JSON.stringify(out.route));
      assert.ok(out.route.pReason > 0.5 && out.route.pReason <= 1, JSON.stringify(out.route));
      assert.equal(out.choices.length, 2);
      for (const c of out.choices) {
        assert.equal(typeof c.content, 'string');
        assert.ok((c.reasoning ?? '').length > 0, 'each candidate thought first');
      }
      assert.ok(out.vote && Array.isArray(out.vote.tally), JSON.stringify(out.vote));
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });
});
