// The CPU path on several threads (pkg/threads/: shared wasm memory and a rayon pool of
// Web Workers) against one thread, through the engine's worker on the default model:
// the matmuls split output columns between threads and each column is one kernel call,
// so logits and greedy tokens must be bit-identical. A page that is not cross-origin
// isolated cannot share memory: it gets one thread and the reason.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, launch } from './chromium.mjs';
import os from 'node:os';
import { defaultMounts, start } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MODEL_URL = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
const modelPath = path.join(root, MODEL_URL);
const PLAIN = '/not-isolated.html';
// tiny_qwen2.gguf with its chat template replaced, byte for byte in place, by one that
// doubles a string 48 times: minijinja has no hook on the size of the strings a render
// builds, so this one runs out of memory inside the load's test render.
const HOSTILE_MODEL_URL = '/hostile/doubling-template.gguf';
const DOUBLING = "{% set ns = namespace(s='abcdefgh') %}{% for i in range(48) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";

/** tiny_qwen2.gguf with `template` (padded with a comment) where its chat template was. */
function withTemplate(template) {
  const bytes = fs.readFileSync(path.join(root, 'tests', 'fixtures', 'tiny_qwen2.gguf'));
  const start = bytes.indexOf('{% for message in messages %}');
  const end = bytes.indexOf('{% endif %}', start) + '{% endif %}'.length;
  const room = end - start;
  const padding = room - Buffer.byteLength(template) - 4;
  assert.ok(start > 0 && padding >= 0, 'the fixture has no chat template to replace, or too short a one');
  bytes.write(`${template}{#${' '.repeat(padding)}#}`, start, 'utf8');
  return bytes;
}
// The engine's worker, with two faults a test can set off: a message that makes the
// worker throw outside any call (its `error` event), and one answered as a trap is
// (`fatal`, as engine-worker.js answers a WebAssembly.RuntimeError).
const FAULTY_WORKER = '/faulty-worker.js';
const FAULTY_WORKER_JS = `
import '/pkg/worker.js';
const real = self.onmessage;
self.onmessage = (e) => {
  const { id, op } = e.data ?? {};
  if (op === 'tokenize' && e.data.args.text === '__throw') return setTimeout(() => { throw new Error('boom'); });
  if (op === 'tokenize' && e.data.args.text === '__trap') {
    return self.postMessage({ id, ok: false, error: { code: 'INTERNAL', message: 'the engine stopped on a fault (unreachable)' }, fatal: true });
  }
  return real(e);
};
`;

let server;
before(async () => {
  // One page served without COOP/COEP: the only way a page here is not isolated.
  const control = async (req, res, url) => {
    if (url.pathname === FAULTY_WORKER) {
      res.writeHead(200, { 'Content-Type': 'text/javascript', 'Cross-Origin-Embedder-Policy': 'require-corp', 'Cross-Origin-Resource-Policy': 'same-origin' });
      res.end(FAULTY_WORKER_JS);
      return true;
    }
    if (url.pathname !== PLAIN) return false;
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>not isolated</title>');
    return true;
  };
  const hostile = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-hostile-'));
  fs.writeFileSync(path.join(hostile, path.basename(HOSTILE_MODEL_URL)), withTemplate(DOUBLING));
  server = await start({ port: 0, host: '127.0.0.1', control, mounts: [{ prefix: '/hostile/', dir: hostile }, ...defaultMounts(root)] });
  server.hostileDir = hostile;
});
after(async () => {
  await server?.close();
  if (server?.hostileDir) fs.rmSync(server.hostileDir, { recursive: true, force: true });
});

describe('CPU threads', { timeout: 600_000 }, () => {
  let browser;
  before(async () => {
    browser = await launch(BASE_FLAGS);
  });
  after(async () => {
    await browser?.close();
  });

  test('two threads give the logits and tokens of one, bit for bit', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(async (url) => {
      const m = await import('/pkg/index.js');
      const run = async (threads) => {
        const engine = await m.createEngine({ threads });
        const loaded = await engine.load({ url, backend: 'cpu' });
        const ids = await engine.tokenize('Tom has 12 apples and buys 30 more.', { special: true });
        const logits = Array.from(await engine.logits(ids));
        const g = await engine.generate('The capital of France is', { max_tokens: 12 });
        const info = await engine.info();
        engine.terminate();
        return { isolated: self.crossOriginIsolated, threads: engine.threads, reason: engine.threadsReason, loaded: loaded.threads, info: info.threads, logits, ids: g.ids };
      };
      return { one: await run(1), two: await run(2) };
    }, MODEL_URL);
    assert.equal(got.two.isolated, true);
    assert.deepEqual([got.one.threads, got.one.loaded, got.one.info], [1, 1, 1]);
    assert.match(got.one.reason, /one CPU thread, as asked/);
    assert.deepEqual([got.two.threads, got.two.loaded, got.two.info], [2, 2, 2], got.two.reason);
    assert.equal(got.two.reason, null);
    assert.equal(got.two.logits.length, 49152);
    const differ = got.one.logits.findIndex((v, i) => !Object.is(v, got.two.logits[i]));
    assert.equal(differ, -1, `logit ${differ}: ${got.one.logits[differ]} vs ${got.two.logits[differ]}`);
    assert.equal(got.one.ids.length, 12);
    assert.deepEqual(got.two.ids, got.one.ids);
  });

  test('a multi-threaded build that cannot start falls back to one thread and says why', async () => {
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(async () => {
      const m = await import('/pkg/index.js');
      const run = async (options) => {
        const engine = await m.createEngine(options);
        const out = { threads: engine.threads, reason: engine.threadsReason, version: engine.version };
        engine.terminate();
        return out;
      };
      // A worker script that is not there; then the one-thread wasm, which cannot be
      // instantiated on shared memory, given to the threads build.
      return {
        isolated: self.crossOriginIsolated,
        noWorker: await run({ threads: 2, threadsWorkerUrl: '/no-such-worker.js' }),
        wrongWasm: await run({ threads: 2, threadsWasmUrl: '/pkg/edge_reason_bg.wasm' }),
      };
    });
    assert.equal(got.isolated, true);
    for (const r of [got.noWorker, got.wrongWasm]) {
      assert.equal(r.threads, 1, JSON.stringify(r));
      assert.match(r.version, /^\d+\.\d+\.\d+/);
      assert.match(r.reason, /^one CPU thread: the multi-threaded build failed to start \(/);
    }
    assert.match(got.noWorker.reason, /worker-threads\.js\) failed to start: its script did not load/);
    assert.match(got.wrongWasm.reason, /wasm failed to start: .+/);
  });

  test('an engine worker that cannot start rejects with the cause, at once', async () => {
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(async () => {
      const m = await import('/pkg/index.js');
      const t0 = performance.now();
      try {
        await m.createEngine({ threads: 1, workerUrl: '/no-such-worker.js' });
        return { resolved: true };
      } catch (e) {
        return { code: e.code, message: e.message, ms: performance.now() - t0 };
      }
    });
    assert.equal(got.code, 'INTERNAL', JSON.stringify(got));
    assert.match(got.message, /the engine's worker \(worker\.js\) failed to start: its script did not load/);
    assert.ok(got.ms < 30_000, `${got.ms} ms`);
  });

  test('a worker that fails is replaced: the call fails at once, the next ones work after load()', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(
      async ({ url, worker }) => {
        const m = await import('/pkg/index.js');
        const engine = await m.createEngine({ threads: 1, workerUrl: worker });
        const code = (p) => p.then(() => 'ok', (e) => `${e.code}: ${e.message}`);
        await engine.load({ url, backend: 'cpu' });
        const before = await code(engine.tokenize('hi'));
        const trapped = await code(engine.tokenize('__trap'));
        const afterTrap = await code(engine.tokenize('hi'));
        await engine.load({ url, backend: 'cpu' });
        const reloaded = await code(engine.tokenize('hi'));
        const thrown = await code(engine.tokenize('__throw'));
        const afterThrow = await code(engine.tokenize('hi'));
        await engine.load({ url, backend: 'cpu' });
        const g = await engine.generate('The capital of France is', { max_tokens: 3 });
        // An aborted generation stops before its next token.
        const stop = new AbortController();
        let pieces = 0;
        const aborted = await code(
          engine.generate('Once upon a time', { max_tokens: 200, onText: () => ++pieces === 2 && stop.abort(), signal: stop.signal }),
        );
        engine.terminate();
        const afterTerminate = await code(engine.tokenize('hi'));
        return { before, trapped, afterTrap, reloaded, thrown, afterThrow, ids: g.ids, aborted, pieces, afterTerminate };
      },
      { url: MODEL_URL, worker: FAULTY_WORKER },
    );
    assert.equal(got.before, 'ok');
    assert.match(got.trapped, /^INTERNAL: the engine stopped on a fault/);
    assert.match(got.afterTrap, /^NOT_LOADED/, 'a fresh worker, no model');
    assert.equal(got.reloaded, 'ok');
    assert.match(got.thrown, /^INTERNAL: the engine's worker failed .*boom.*load the model again/);
    assert.match(got.afterThrow, /^NOT_LOADED/);
    assert.equal(got.ids.length, 3);
    assert.match(got.aborted, /^ABORTED/);
    assert.ok(got.pieces < 10, `${got.pieces} pieces after the abort`);
    assert.match(got.afterTerminate, /^ABORTED: the engine was terminated/);
  });

  test('an abort stops a long prompt between its parts (generate and reason)', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(async (url) => {
      const m = await import('/pkg/index.js');
      const engine = await m.createEngine({ threads: 1 });
      await engine.load({ url, backend: 'cpu' });
      // About 1,000 tokens: seconds of prefill on one thread, 8 parts of 128.
      const prompt = 'one two three four five six seven eight nine ten '.repeat(100);
      const timed = async (run) => {
        const stop = new AbortController();
        const t0 = performance.now();
        let abortedAt = null;
        setTimeout(() => { abortedAt = performance.now(); stop.abort(); }, 300);
        const outcome = await run(stop.signal).then(() => 'ok', (e) => `${e.code}: ${e.message}`);
        return { outcome, afterAbortMs: performance.now() - (abortedAt ?? t0) };
      };
      const tokens = (await engine.tokenize(prompt)).length;
      const generate = await timed((signal) => engine.generate(prompt, { max_tokens: 1, signal }));
      const reason = await timed((signal) => engine.reason({ prompt, raw: true, options: { mode: 'chat', max_tokens: 1 } }, { signal }));
      const t0 = performance.now();
      const whole = await engine.reason({ prompt, raw: true, options: { mode: 'chat', max_tokens: 1 } });
      const wholeMs = performance.now() - t0;
      engine.terminate();
      return { tokens, generate, reason, wholeMs, whole: whole.events.filter((e) => e.type === 'prefill') };
    }, MODEL_URL);
    t.diagnostic(JSON.stringify({ tokens: got.tokens, wholeMs: got.wholeMs, generate: got.generate, reason: got.reason }));
    assert.ok(got.tokens > 800, `${got.tokens} tokens`);
    assert.ok(got.wholeMs > 1000, `the whole prefill took ${got.wholeMs} ms: too short to tell an abort between parts`);
    for (const call of ['generate', 'reason']) {
      assert.match(got[call].outcome, /^ABORTED/, call);
      // It ends within the part it was in (an eighth of the whole prefill), not after all.
      assert.ok(got[call].afterAbortMs < got.wholeMs / 3, `${call} stopped ${got[call].afterAbortMs} ms after the abort (whole prefill ${got.wholeMs} ms)`);
    }
    // Progress, part by part, up to the whole prompt.
    const parts = Math.ceil(got.tokens / 128);
    assert.equal(got.whole.length, parts);
    assert.deepEqual(got.whole.at(-1), { type: 'prefill', tokens: got.tokens, total: got.tokens });
    assert.ok(got.whole.every((e, i) => e.tokens === Math.min((i + 1) * 128, got.tokens)));
  });

  test('a chat template that runs out of memory fails its load with INTERNAL, and the engine loads again', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    const { page } = browser;
    await page.goto(server.url, { waitUntil: 'load' });
    const got = await page.evaluate(
      async ({ hostile, url }) => {
        const m = await import('/pkg/index.js');
        const engine = await m.createEngine({ threads: 1 });
        const t0 = performance.now();
        const failed = await engine.load({ url: hostile, backend: 'cpu' }).then(() => 'loaded', (e) => `${e.code}: ${e.message}`);
        const ms = performance.now() - t0;
        await engine.load({ url, backend: 'cpu' });
        const g = await engine.generate('The capital of France is', { max_tokens: 2 });
        engine.terminate();
        return { failed, ms, ids: g.ids.length };
      },
      { hostile: HOSTILE_MODEL_URL, url: MODEL_URL },
    );
    t.diagnostic(JSON.stringify(got));
    assert.match(got.failed, /^INTERNAL: the engine's worker failed \(.*\) while loading a model; it restarts with no model loaded: the model may be too large for this device's memory, or hostile/);
    assert.ok(got.ms < 60_000, `${got.ms} ms`);
    assert.equal(got.ids, 2, 'the engine works after loading again');
  });

  test('a page that is not cross-origin isolated runs on one thread and says why', async () => {
    const { page } = browser;
    await page.goto(`${server.url}${PLAIN.slice(1)}`, { waitUntil: 'load' });
    const got = await page.evaluate(async () => {
      const m = await import('/pkg/index.js');
      const engine = await m.createEngine({ threads: 4 });
      const auto = await m.createEngine();
      const out = { isolated: self.crossOriginIsolated, threads: engine.threads, reason: engine.threadsReason, auto: auto.threads };
      let bad;
      try {
        await m.createEngine({ threads: 0 });
      } catch (e) {
        bad = { code: e.code, message: e.message };
      }
      engine.terminate();
      auto.terminate();
      return { ...out, bad };
    });
    assert.equal(got.isolated, false);
    assert.equal(got.threads, 1);
    assert.equal(got.auto, 1);
    assert.match(got.reason, /not cross-origin isolated.*COOP: same-origin and COEP: require-corp/);
    assert.equal(got.bad.code, 'INVALID_ARGUMENT');
    assert.match(got.bad.message, /threads 0: use "auto" or a whole number/);
  });
});
