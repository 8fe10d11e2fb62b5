// Browser tests for the demo page and the dev server.
//
//   ./build.sh test                 (builds pkg/ first, then runs these)
//   node --test tests/browser/      (needs pkg/ built and `npm ci` done in tests/browser)
//
// Chromium is the system one (/usr/bin/chromium, or $CHROMIUM); WebGPU runs on the CPU
// through SwiftShader. Each browser gets a fresh user-data-dir.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, BASE_FLAGS, WEBGPU_FLAGS, launch } from './chromium.mjs';
import { start } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const TIMEOUT = 120_000;

function crateVersion() {
  const toml = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const pkg = toml.split(/^\[/m).find((s) => s.startsWith('package]'));
  const m = pkg && /^version\s*=\s*"([^"]+)"/m.exec(pkg);
  assert.ok(m, 'cannot read [package] version from Cargo.toml');
  return m[1];
}

const wasmFile = path.join(root, 'pkg', 'edge_reason_bg.wasm');
assert.ok(
  fs.existsSync(path.join(root, 'pkg', 'edge_reason.js')) && fs.existsSync(wasmFile),
  'pkg/ is not built: run ./build.sh wasm first',
);
assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (./build.sh setup installs it)`);

// A module worker that detects the backend, served from this origin (the page's
// Content-Security-Policy starts workers from its own origin only, not from blob: URLs).
const DETECT_WORKER = '/detect-worker.js';
const DETECT_WORKER_JS = `
import init, { version, detectBackend } from '/pkg/edge_reason.js';
try {
  await init();
  postMessage({ version: version(), choice: await detectBackend() });
} catch (e) {
  postMessage({ error: String((e && e.stack) || e) });
}
`;

let server;
before(async () => {
  const control = async (req, res, url) => {
    if (url.pathname !== DETECT_WORKER) return false;
    res.writeHead(200, { 'Content-Type': 'text/javascript', 'Cross-Origin-Embedder-Policy': 'require-corp', 'Cross-Origin-Resource-Policy': 'same-origin' });
    res.end(DETECT_WORKER_JS);
    return true;
  };
  server = await start({ port: 0, host: '127.0.0.1', control });
});
after(async () => {
  await server?.close();
});

/**
 * Launch Chromium with `flags`, open the page and wait until both facts are filled in,
 * run `fn({ page, shown, logs, errors })`, then close the browser. On failure the page's
 * console and errors are appended to the message.
 */
async function withPage(flags, { initScript } = {}, fn) {
  const logs = [];
  const errors = [];
  let browser;
  try {
    browser = await launch(flags);
    const { page } = browser;
    page.on('console', (msg) => {
      const line = `[console.${msg.type()}] ${msg.text()}`;
      logs.push(line);
      if (msg.type() === 'error') errors.push(line);
    });
    page.on('pageerror', (err) => errors.push(`[pageerror] ${err.stack ?? err}`));
    page.on('requestfailed', (req) =>
      errors.push(`[requestfailed] ${req.url()}: ${req.failure()?.errorText}`),
    );
    page.on('response', (res) => {
      if (res.status() >= 400) errors.push(`[http ${res.status()}] ${res.url()}`);
    });
    if (initScript) await page.addInitScript(initScript);

    await page.goto(server.url, { waitUntil: 'load' });
    await page.waitForSelector('[data-testid="backend"]:not([data-state="loading"])', { timeout: 60_000 });
    const shown = await page.evaluate(async () => {
      const el = (id) => document.querySelector(`[data-testid="${id}"]`);
      // Straight from the module too, not only from the DOM.
      const m = await import('/pkg/edge_reason.js');
      await m.default();
      return {
        version: el('version').textContent.trim(),
        versionState: el('version').dataset.state,
        // The badge reads "WebGPU" or "CPU fallback"; data-backend holds the engine's name.
        backend: el('backend').dataset.backend || el('backend').textContent.trim(),
        backendState: el('backend').dataset.state,
        adapter: el('backend').dataset.adapter || null,
        reason: el('backend-reason').textContent.trim(),
        error: el('error').textContent.trim(),
        crossOriginIsolated: self.crossOriginIsolated,
        direct: { version: m.version(), choice: await m.detectBackend() },
      };
    });
    await fn({ page, shown, logs, errors });
  } catch (err) {
    err.message += `\n${pageLog(logs, errors)}`;
    throw err;
  } finally {
    await browser?.close();
  }
}

function pageLog(logs, errors) {
  const out = [];
  if (errors.length) out.push('page errors:', ...errors.map((l) => '  ' + l));
  if (logs.length) out.push('page console:', ...logs.map((l) => '  ' + l));
  return out.length ? out.join('\n') : '(the page logged nothing)';
}

function assertClean({ errors, logs }) {
  assert.deepEqual(errors, [], `the page reported errors:\n${pageLog(logs, errors)}`);
}

describe('demo page', () => {
  // SwiftShader is Chrome's WebGPU when it has no usable GPU: a CPU emulating one,
  // slower than the CPU engine, so auto passes it over and says so.
  test('with only a software WebGPU adapter (SwiftShader): shows the version and backend cpu, naming the adapter and why', { timeout: TIMEOUT }, async () => {
    await withPage([...BASE_FLAGS, ...WEBGPU_FLAGS], {}, async ({ shown, logs, errors }) => {
      assertClean({ logs, errors });
      assert.equal(shown.version, crateVersion());
      assert.equal(shown.versionState, 'ready');
      assert.equal(shown.backend, 'cpu', `reason: ${shown.reason}`);
      assert.equal(shown.backendState, 'ready');
      assert.ok(shown.adapter, 'no adapter name shown');
      assert.match(shown.adapter, /swiftshader/i);
      assert.match(shown.reason, /software .*slower than the CPU engine; load with backend "webgpu"/);
      assert.equal(shown.error, '');
      assert.equal(shown.crossOriginIsolated, true, 'COOP/COEP did not make the page cross-origin isolated');
      assert.equal(shown.direct.version, crateVersion());
      assert.equal(shown.direct.choice.backend, 'cpu');
      assert.match(shown.direct.choice.adapter, /swiftshader/i);
    });
  });

  test('detectBackend works in a module Worker too', { timeout: TIMEOUT }, async () => {
    await withPage([...BASE_FLAGS, ...WEBGPU_FLAGS], {}, async ({ page, logs, errors }) => {
      const fromWorker = await page.evaluate(async (url) => {
        const worker = new Worker(url, { type: 'module' });
        return await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('worker timed out')), 60_000);
          worker.onmessage = (e) => { clearTimeout(timer); worker.terminate(); resolve(e.data); };
          worker.onerror = (e) => { clearTimeout(timer); reject(new Error(`worker error: ${e.message}`)); };
        });
      }, DETECT_WORKER);
      assertClean({ logs, errors });
      assert.equal(fromWorker.error, undefined, fromWorker.error);
      assert.equal(fromWorker.version, crateVersion());
      assert.equal(fromWorker.choice.backend, 'cpu', `reason: ${fromWorker.choice.reason}`);
      assert.match(fromWorker.choice.adapter, /swiftshader/i);
    });
  });

  // Chromium 156 keeps navigator.gpu whatever the flags (--disable-features=WebGPU and
  // --disable-blink-features=WebGPU both leave it); without the WebGPU flags a headless
  // Chromium with no GPU simply offers no adapter.
  test('without the WebGPU flags: no adapter, backend cpu with a reason', { timeout: TIMEOUT }, async () => {
    await withPage(BASE_FLAGS, {}, async ({ shown, logs, errors }) => {
      assertClean({ logs, errors });
      assert.equal(shown.version, crateVersion());
      assert.equal(shown.backend, 'cpu');
      assert.equal(shown.backendState, 'ready');
      assert.equal(shown.adapter, null);
      assert.match(shown.reason, /no WebGPU adapter was offered/);
      assert.equal(shown.direct.choice.backend, 'cpu');
      assert.equal(shown.direct.choice.adapter, null);
    });
  });

  test('a browser with no navigator.gpu: backend cpu with a reason', { timeout: TIMEOUT }, async () => {
    // A browser without WebGPU, simulated: remove the API before any page script runs.
    const noWebGpu = () => {
      delete Navigator.prototype.gpu;
      if (typeof WorkerNavigator !== 'undefined') delete WorkerNavigator.prototype.gpu;
    };
    await withPage([...BASE_FLAGS, ...WEBGPU_FLAGS], { initScript: noWebGpu }, async ({ shown, logs, errors }) => {
      assertClean({ logs, errors });
      assert.equal(shown.version, crateVersion());
      assert.equal(shown.backend, 'cpu');
      assert.equal(shown.adapter, null);
      assert.match(shown.reason, /navigator\.gpu is missing/);
    });
  });
});

// ----------------------------------------------------------------------------- server

/** A raw request (the path is sent exactly as given, no URL normalisation). */
function request(pathname, { method = 'GET', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: server.port, path: pathname, method, headers },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function assertIsolationHeaders(res) {
  assert.equal(res.headers['cross-origin-opener-policy'], 'same-origin');
  assert.equal(res.headers['cross-origin-embedder-policy'], 'require-corp');
  assert.equal(res.headers['cross-origin-resource-policy'], 'same-origin');
}

describe('dev server', () => {
  const wasmSize = fs.statSync(wasmFile).size;

  test('Range bytes=0-3 of the wasm: 206, \\0asm, application/wasm', async () => {
    const res = await request('/pkg/edge_reason_bg.wasm', { headers: { Range: 'bytes=0-3' } });
    assert.equal(res.status, 206);
    assert.deepEqual([...res.body], [0x00, 0x61, 0x73, 0x6d]);
    assert.equal(res.headers['content-type'], 'application/wasm');
    assert.equal(res.headers['content-range'], `bytes 0-3/${wasmSize}`);
    assert.equal(res.headers['content-length'], '4');
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assertIsolationHeaders(res);
  });

  test('whole file, suffix range, open range, HEAD', async () => {
    const full = await request('/pkg/edge_reason_bg.wasm');
    assert.equal(full.status, 200);
    assert.equal(full.body.length, wasmSize);
    assert.equal(full.headers['accept-ranges'], 'bytes');
    assertIsolationHeaders(full);

    const tail = await request('/pkg/edge_reason_bg.wasm', { headers: { Range: 'bytes=-10' } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes ${wasmSize - 10}-${wasmSize - 1}/${wasmSize}`);
    assert.deepEqual(tail.body, full.body.subarray(wasmSize - 10));

    const open = await request('/pkg/edge_reason_bg.wasm', { headers: { Range: `bytes=${wasmSize - 5}-` } });
    assert.equal(open.status, 206);
    assert.deepEqual(open.body, full.body.subarray(wasmSize - 5));

    const past = await request('/pkg/edge_reason_bg.wasm', { headers: { Range: `bytes=${wasmSize - 2}-${wasmSize + 100}` } });
    assert.equal(past.status, 206);
    assert.equal(past.body.length, 2);

    const head = await request('/pkg/edge_reason_bg.wasm', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(wasmSize));
    assert.equal(head.body.length, 0);
    assertIsolationHeaders(head);

    const headRange = await request('/pkg/edge_reason_bg.wasm', { method: 'HEAD', headers: { Range: 'bytes=0-3' } });
    assert.equal(headRange.status, 206);
    assert.equal(headRange.headers['content-length'], '4');
    assert.equal(headRange.body.length, 0);
  });

  test('unsatisfiable range: 416 with Content-Range bytes */size', async () => {
    const res = await request('/pkg/edge_reason_bg.wasm', { headers: { Range: `bytes=${wasmSize}-` } });
    assert.equal(res.status, 416);
    assert.equal(res.headers['content-range'], `bytes */${wasmSize}`);
    assertIsolationHeaders(res);
  });

  test('MIME types', async () => {
    const cases = [
      ['/', 'text/html'],
      ['/index.html', 'text/html'],
      ['/main.js', 'text/javascript'],
      ['/style.css', 'text/css'],
      ['/pkg/edge_reason.js', 'text/javascript'],
      ['/pkg/package.json', 'application/json'],
      ['/pkg/edge_reason_bg.wasm', 'application/wasm'],
    ];
    for (const [p, mime] of cases) {
      const res = await request(p, { method: 'HEAD' });
      assert.equal(res.status, 200, p);
      assert.equal(res.headers['content-type'].split(';')[0], mime, p);
      assertIsolationHeaders(res);
    }
  });

  test('the model is served with ranges as application/octet-stream', async (t) => {
    const model = path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf');
    if (!fs.existsSync(model)) return t.skip('models/ has no default model (./build.sh model)');
    const res = await request('/models/SmolLM2-135M-Instruct.Q4_1.gguf', { headers: { Range: 'bytes=0-3' } });
    assert.equal(res.status, 206);
    assert.equal(res.body.toString('latin1'), 'GGUF');
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['content-range'], `bytes 0-3/${fs.statSync(model).size}`);
  });

  test('path traversal is refused', async () => {
    const attempts = [
      '/../Cargo.toml',
      '/../../etc/passwd',
      '/pkg/../../Cargo.toml',
      '/pkg/../Cargo.toml',
      '/models/../Cargo.toml',
      '/%2e%2e/Cargo.toml',
      '/%2E%2E%2FCargo.toml',
      '/pkg/%2e%2e/%2e%2e/Cargo.toml',
      '/..%2fCargo.toml',
      '/..%5cCargo.toml',
      '/pkg/..%2f..%2fbuild.sh',
      '/%00index.html',
      '/.git/config',
      '/pkg/../.git/HEAD',
    ];
    for (const p of attempts) {
      const res = await request(p);
      assert.ok([400, 403, 404].includes(res.status), `${p} gave ${res.status}`);
      const body = res.body.toString('latin1');
      assert.ok(!body.includes('[package]') && !body.includes('root:') && !body.includes('set -euo'), `${p} leaked a file`);
    }
  });

  test('the Content-Security-Policy the page and the engine run under', async () => {
    for (const p of ['/', '/main.js', '/pkg/edge_reason_bg.wasm']) {
      const res = await request(p, { method: 'HEAD' });
      assert.equal(
        res.headers['content-security-policy'],
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        p,
      );
    }
  });

  test('a request that names another host is refused (DNS rebinding)', async () => {
    for (const host of ['evil.example', `evil.example:${server.port}`, '127.0.0.1.evil.example']) {
      const res = await request('/', { headers: { Host: host } });
      assert.equal(res.status, 421, host);
    }
    for (const host of [`127.0.0.1:${server.port}`, `localhost:${server.port}`, `app.localhost:${server.port}`]) {
      assert.equal((await request('/', { headers: { Host: host } })).status, 200, host);
    }
  });

  test('a symbolic link out of a served directory is not followed', async (t) => {
    const link = path.join(root, 'www', 'link-out-of-www');
    try {
      fs.symlinkSync(path.join(root, 'Cargo.toml'), link);
    } catch (err) {
      return t.skip(`cannot make a symbolic link here: ${err.message}`);
    }
    try {
      const res = await request('/link-out-of-www');
      assert.equal(res.status, 403);
      assert.ok(!res.body.toString('latin1').includes('[package]'), 'the file behind the link leaked');
    } finally {
      fs.rmSync(link, { force: true });
    }
  });

  test('unknown paths 404, other methods 405', async () => {
    assert.equal((await request('/no-such-file.js')).status, 404);
    assert.equal((await request('/pkg/no-such-file.wasm')).status, 404);
    const post = await request('/index.html', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
  });
});

// The CPU engine compiled to wasm, on the default model, against llama.cpp's fixtures
// with the native parity test's rules (tests/it/parity.rs): the same token ids on the
// tokenizer corpus; last-position logits within 0.75 of llama.cpp's top 256 and the
// same top-1 unless llama.cpp's own top-two margin is below that; and greedy decoding
// through the KV cache equal, token for token, to re-running the whole sequence.
describe('wasm CPU engine', () => {
  const fixture = (name) =>
    JSON.parse(fs.readFileSync(path.join(root, 'tests', 'fixtures', name), 'utf8'));
  const modelUrl = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
  const TOLERANCE = 0.75;

  test('matches llama.cpp and decodes consistently', { timeout: 300_000 }, async () => {
    assert.ok(
      fs.existsSync(path.join(root, modelUrl)),
      'the default model is missing: run ./build.sh model',
    );
    const corpus = fixture('tokenizer_corpus.json').cases;
    // The 258-token prompt is left to the native test: the wasm CPU path is slow.
    const prompts = fixture('smollm2_logits.json').prompts.filter((p) => p.ids.length < 64);
    await withPage(BASE_FLAGS, {}, async ({ page, logs, errors }) => {
      const got = await page.evaluate(
        async ({ modelUrl, texts, promptIds, tops }) => {
          const m = await import('/pkg/edge_reason.js');
          await m.default();
          const bytes = new Uint8Array(await (await fetch(modelUrl)).arrayBuffer());
          // No adapter in this browser: "auto" falls back to the CPU and says why.
          const engine = await m.Engine.load(bytes);
          const backend = engine.backend;
          const ids = texts.map((t) => Array.from(engine.tokenize(t, true)));
          const argmax = (l) => l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
          const logits = [];
          for (const [k, p] of promptIds.entries()) {
            const l = await engine.logits(Uint32Array.from(p));
            logits.push({ argmax: argmax(l), top: tops[k].map(([id]) => l[id]) });
          }
          // Greedy through the cache vs argmax of a fresh prefill at every step.
          const streamed = [];
          const g = await engine.generate('2 + 2 =', { max_tokens: 12 }, (t) => streamed.push(t));
          const seq = Array.from(engine.tokenize('2 + 2 =', true));
          const replayed = [];
          for (let i = 0; i < g.ids.length; i++) {
            replayed.push(argmax(await engine.logits(Uint32Array.from(seq))));
            seq.push(g.ids[i]);
          }
          const failure = async (f) => {
            try {
              await f();
              return null;
            } catch (e) {
              return `${e.constructor.name}: ${e.message}`;
            }
          };
          const badModel = await failure(() => m.Engine.load(bytes.subarray(0, 1000), { backend: 'cpu' }));
          const noGpu = await failure(() => m.Engine.load(bytes, { backend: 'webgpu' }));
          const badOption = await failure(() => m.Engine.load(bytes, { backend: 'tpu' }));
          return { backend, ids, logits, generation: g, streamed: streamed.join(''), replayed, badModel, noGpu, badOption };
        },
        {
          modelUrl,
          texts: corpus.map((c) => c.text),
          promptIds: prompts.map((p) => p.ids),
          tops: prompts.map((p) => p.top),
        },
      );
      assertClean({ logs, errors });
      corpus.forEach((c, i) => assert.deepEqual(got.ids[i], c.ids, `token ids of ${JSON.stringify(c.text)}`));
      prompts.forEach((p, k) => {
        const diff = Math.max(...p.top.map(([, want], j) => Math.abs(got.logits[k].top[j] - want)));
        assert.ok(diff <= TOLERANCE, `prompt ${k}: max |logit diff| ${diff}`);
        const margin = p.top[0][1] - p.top[1][1];
        assert.ok(
          got.logits[k].argmax === p.top[0][0] || margin < TOLERANCE,
          `prompt ${k}: top-1 ${got.logits[k].argmax}, llama.cpp ${p.top[0][0]} (margin ${margin})`,
        );
      });
      assert.equal(got.generation.ids.length, 12);
      assert.deepEqual(got.generation.ids, got.replayed);
      // llama.cpp's first greedy token for "2 + 2 =" wins by 3.5 logits.
      assert.equal(got.generation.ids[0], 216);
      assert.ok(got.generation.decode_tok_s > 0);
      assert.equal(got.streamed, got.generation.text, 'streamed pieces make the whole text');
      assert.equal(got.backend.backend, 'cpu');
      assert.match(got.backend.reason, /^CPU backend: .*no WebGPU adapter was offered/);
      assert.doesNotMatch(got.backend.reason, /--backend/);
      assert.match(got.badModel, /^Error: the GGUF file is truncated/);
      // In a browser user's words: the load option, not the CLI's flag.
      assert.match(got.noGpu, /^Error: no WebGPU: no WebGPU adapter was offered; load with backend "cpu"/);
      assert.doesNotMatch(got.noGpu, /--backend/);
      assert.match(got.badOption, /backend `tpu`: use "auto"/);
    });
  });
});

// The browser's SIMD128 kernels (src/cpu/q4_1.rs, q8_0.rs, q4_k.rs, q6_k.rs) against
// llama.cpp on the tiny random-weight fixtures; tiny_qwen2's Q8_0 embedding and attention and Q4_1 FFN
// output run through them: natively that model matches llama.cpp to float noise (no
// activation sits on a rounding boundary), so the wasm path must too, at every prompt
// and for every teacher-forced greedy token. A kernel off by one nibble is off by far
// more than 1e-3 here, where the default model's 0.75 above could hide it.
describe('wasm CPU kernels', () => {
  // tiny_qwen2 (Q8_0, Q4_1 and the rest) to float noise; tiny_llama_q4k (Q4_K and Q6_K:
  // the K-quant kernels) within the native test's 0.25 (tests/it/parity.rs: one
  // activation on a Q8 rounding boundary), where a wrong nibble or scale is off by more.
  for (const [name, tolerance] of [['tiny_qwen2', 1e-3], ['tiny_llama_q4k', 0.25]]) {
    test(`match llama.cpp on ${name}`, { timeout: 120_000 }, () => checkTiny(name, tolerance));
  }

  async function checkTiny(name, EXACT) {
    const fx = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'fixtures', `${name}_logits.json`), 'utf8'));
    const model = fs.readFileSync(path.join(root, 'tests', 'fixtures', `${name}.gguf`)).toString('base64');
    await withPage(BASE_FLAGS, {}, async ({ page, logs, errors }) => {
      const got = await page.evaluate(
        async ({ model, prompts }) => {
          const m = await import('/pkg/edge_reason.js');
          await m.default();
          const bytes = Uint8Array.from(atob(model), (c) => c.charCodeAt(0));
          const engine = await m.Engine.load(bytes, { backend: 'cpu' });
          const argmax = (l) => l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
          const out = [];
          for (const p of prompts) {
            const l = await engine.logits(Uint32Array.from(p.ids));
            // Teacher-forced greedy: the argmax after the prompt plus the reference's tokens so far.
            const greedy = [];
            for (let i = 0; i < Math.min(8, p.greedy.length); i++) {
              greedy.push(argmax(await engine.logits(Uint32Array.from([...p.ids, ...p.greedy.slice(0, i)]))));
            }
            out.push({ top: p.top.map(([id]) => l[id]), greedy });
          }
          return out;
        },
        { model, prompts: fx.prompts.map((p) => ({ ids: p.ids, top: p.top, greedy: p.greedy })) },
      );
      assertClean({ logs, errors });
      assert.ok(got.length >= 6, 'the fixture has prompts');
      got.forEach((g, k) => {
        const p = fx.prompts[k];
        const diff = Math.max(...p.top.map(([, want], j) => Math.abs(g.top[j] - want)));
        assert.ok(diff <= EXACT, `prompt ${k}: max |logit diff| ${diff} over llama.cpp's top 256`);
        g.greedy.forEach((t, i) =>
          assert.ok(t === p.greedy[i] || p.greedy_margins[i] < EXACT, `prompt ${k}, greedy token ${i}: ${t} vs llama.cpp ${p.greedy[i]}`),
        );
      });
    });
  }
});

// The WebGPU backend compiled to wasm, on SwiftShader, against the plain-f32 CPU
// reference (tests/fixtures/smollm2_f32_reference.json, written and kept current by
// tests/it/f32_reference.rs): the GPU computes in f32 like that reference, so its logits
// agree to float reassociation, the top-1 is the same at every position of every
// prompt (unless the reference's own top-two gap is under that noise), and greedy
// decoding gives the same tokens.
describe('wasm WebGPU engine', () => {
  const reference = JSON.parse(
    fs.readFileSync(path.join(root, 'tests', 'fixtures', 'smollm2_f32_reference.json'), 'utf8'),
  );
  const modelUrl = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
  // Measured natively (tests/it/gpu.rs): GPU vs f32 CPU logits within 2e-2.
  const LOGIT_TOLERANCE = 2e-2;
  // SwiftShader takes seconds a token (a decode step, or a prompt position: 1-3 s on a
  // 2-core CI machine), so in the browser every position of the first two prompts is
  // checked (a 5-token prompt, and the 24-token chat one: two row tiles), and
  // greedy tokens for the first; the native test (tests/it/gpu.rs) checks every
  // prompt's positions and 16 greedy tokens on lavapipe, through the same WGSL.
  const checkedPrompts = reference.prompts.slice(0, 2);
  const greedyChecked = (k) => (k === 0 ? 2 : 0);

  test('matches the f32 reference at every position and for greedy tokens', { timeout: 1_200_000 }, async () => {
    assert.ok(fs.existsSync(path.join(root, modelUrl)), 'the default model is missing: run ./build.sh model');
    await withPage([...BASE_FLAGS, ...WEBGPU_FLAGS], {}, async ({ page, logs, errors }) => {
      const got = await page.evaluate(
        async ({ modelUrl, prompts }) => {
          const m = await import('/pkg/edge_reason.js');
          await m.default();
          const bytes = new Uint8Array(await (await fetch(modelUrl)).arrayBuffer());
          // WebGPU on SwiftShader, as asked (auto would take the CPU); the exact (f32) KV
          // cache to compare with the f32 reference.
          const engine = await m.Engine.load(bytes, { backend: 'webgpu', kv_cache: 'f32' });
          const out = { backend: engine.backend, prompts: [] };
          for (const p of prompts) {
            const vocab = 49152;
            const l = await engine.positionLogits(Uint32Array.from(p.ids));
            const positions = [];
            for (let i = 0; i < p.ids.length; i++) {
              const row = l.subarray(i * vocab, (i + 1) * vocab);
              let best = 0;
              for (let j = 1; j < vocab; j++) if (row[j] > row[best]) best = j;
              positions.push({ argmax: best, top: p.top[i].map(([id]) => row[id]) });
            }
            const g = p.greedyChecked ? await engine.generate(p.text, { max_tokens: p.greedyChecked }) : null;
            out.prompts.push({ rows: l.length / vocab, positions, greedy: g?.ids, stop: g?.stop });
          }
          engine.free();
          // The default f16 cache (f16 packed in u32 words: SwiftShader has no
          // shader-f16): greedy tokens, then tokens sampled on the GPU (sample.wgsl),
          // the same seed twice and another seed.
          const f16 = await m.Engine.load(bytes, { backend: 'webgpu' });
          out.f16Greedy = (await f16.generate(prompts[0].text, { max_tokens: 4 })).ids;
          const sampled = (seed) => ({ max_tokens: 3, temperature: 1.0, top_k: 40, top_p: 0.95, seed });
          out.sampled = [];
          for (const seed of [3, 3, 4]) out.sampled.push((await f16.generate(prompts[0].text, sampled(seed))).ids);
          return out;
        },
        { modelUrl, prompts: checkedPrompts.map((p, k) => ({ ...p, greedyChecked: greedyChecked(k) })) },
      );
      assertClean({ logs, errors });
      assert.equal(got.backend.backend, 'webgpu', got.backend.reason);
      assert.match(got.backend.reason, /^WebGPU, as asked, on a software adapter/);
      assert.match(got.backend.adapter, /swiftshader/i);
      assert.equal(got.prompts.length, 2);
      checkedPrompts.forEach((p, k) => {
        const g = got.prompts[k];
        assert.equal(g.rows, p.ids.length, `prompt ${k}: one logits row per position`);
        p.top.forEach((top, i) => {
          const at = g.positions[i];
          top.forEach(([id, want], j) => {
            const diff = Math.abs(at.top[j] - want);
            assert.ok(diff <= LOGIT_TOLERANCE, `prompt ${k} position ${i} token ${id}: GPU ${at.top[j]}, reference ${want}`);
          });
          const gap = top[0][1] - top[1][1];
          assert.ok(
            at.argmax === top[0][0] || gap < LOGIT_TOLERANCE,
            `prompt ${k} position ${i}: GPU top-1 ${at.argmax}, reference ${top[0][0]} (gap ${gap})`,
          );
        });
        const n = greedyChecked(k);
        if (n === 0) return;
        assert.deepEqual(g.greedy, p.greedy.slice(0, n), `prompt ${k}: greedy tokens`);
        assert.equal(g.stop, p.greedy.length < n ? 'eos' : 'length');
      });
      // The f16 cache (packed in u32 words here: the benchmark page test checks which)
      // keeps the greedy tokens (natively: 32 on every parity prompt).
      assert.deepEqual(got.f16Greedy, reference.prompts[0].greedy.slice(0, 4), 'greedy tokens with the f16 cache');
      // Exactness of GPU sampling against the CPU sampler is tested natively
      // (tests/it/gpu.rs); here: Tint runs it, a seed reproduces, and it is not greedy.
      const [a, again, other] = got.sampled;
      assert.equal(a.length, 3);
      assert.deepEqual(again, a, 'the same seed samples the same tokens');
      const greedy = reference.prompts[0].greedy.slice(0, 3);
      assert.ok(
        [a, other].some((ids) => JSON.stringify(ids) !== JSON.stringify(greedy)),
        `two seeds both sampled the greedy tokens ${greedy}`,
      );
    });
  });
});

// The benchmark page (www/bench.html) runs Engine.bench() and shows the JSON of
// `edge-reason bench --json`; here with tiny settings, only its shape is checked.
describe('benchmark page', () => {
  test('reports prefill, decode and stream step times on WebGPU', { timeout: 600_000 }, async (t) => {
    await withPage([...BASE_FLAGS, ...WEBGPU_FLAGS], {}, async ({ page, logs, errors }) => {
      const q = 'run=1&backend=webgpu&prefill_tokens=4&decode_tokens=1&runs=1&streams=1,2';
      await page.goto(`${server.url}bench.html?${q}`);
      await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 540_000 });
      assert.equal(await page.textContent('[data-testid="error"]'), '');
      const r = JSON.parse(await page.textContent('[data-testid="bench-json"]'));
      assertClean({ logs, errors });
      assert.equal(r.backend, 'gpu');
      assert.match(r.adapter, /swiftshader/i);
      assert.equal(r.kv_cache, 'f16-packed', 'SwiftShader has no shader-f16: f16 packed in u32 words');
      assert.equal(r.prefill_tokens, 4);
      assert.equal(r.decode_tokens, 1);
      for (const k of ['prefill_tok_s', 'decode_tok_s', 'decode_gb_s', 'load_s']) {
        assert.ok(r[k] > 0, `${k} = ${r[k]}`);
      }
      assert.deepEqual(Object.keys(r.stream_step_ms).sort(), ['1', '2']);
      for (const ms of Object.values(r.stream_step_ms)) assert.ok(ms > 0);
      // The weights and the session's buffers; a second candidate adds its own.
      assert.deepEqual(Object.keys(r.gpu_buffer_bytes).sort(), ['1', '2']);
      assert.ok(r.gpu_buffer_bytes['1'] > 50e6, JSON.stringify(r.gpu_buffer_bytes));
      assert.ok(r.gpu_buffer_bytes['2'] > r.gpu_buffer_bytes['1'], JSON.stringify(r.gpu_buffer_bytes));
      assert.equal(typeof r.subgroups, 'boolean');
      t.diagnostic(
        `SwiftShader: prefill ${r.prefill_tok_s.toFixed(2)} tok/s, decode ${r.decode_tok_s.toFixed(2)} tok/s, ` +
          `step of 2 streams ${r.stream_step_ms['2'].toFixed(0)} ms, subgroups ${r.subgroups}, ` +
          `GPU buffers ${(r.gpu_buffer_bytes['1'] / 2 ** 20).toFixed(1)} MiB`,
      );
    });
  });
});
