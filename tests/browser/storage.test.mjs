// Browser tests for model storage: resumable, verified downloads into OPFS through the
// engine's Web Worker (createEngine from pkg/index.js), against the dev server with
// faults injected per request (www/faults.mjs). Every claim about what was fetched is
// checked with the server's own byte counters; every file is checked against the
// source's SHA-256 computed here by Node.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from './chromium.mjs';
import { start, defaultMounts } from '../../www/serve.mjs';
import { createFaults } from '../../www/faults.mjs';
import { modelManifest } from '../../tools/model-manifest.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MiB = 1 << 20;
const CHUNK = 1 * MiB;
const SIZE = 12 * MiB + 12345; // 13 chunks, the last one short
const FIXTURE = '/fixtures/blob.bin';
const RETRY = { attempts: 6, baseDelayMs: 40 };

const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MODEL_URL = `/models/${MODEL_NAME}`;
const modelPath = path.join(root, 'models', MODEL_NAME);
// The default model's largest tensor (token_embd, 49152 x 576 in Q8_0) + 64 MiB.
const WASM_MEMORY_BUDGET = (49152 * 576 / 32) * 34 + 64 * MiB;

let server;
let faults;
let fixtureDir;
let fixtureSha;
let otherSha;

before(async () => {
  fixtureDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-fixtures-'));
  const bytes = crypto.randomBytes(SIZE);
  fs.writeFileSync(path.join(fixtureDir, 'blob.bin'), bytes);
  fixtureSha = crypto.createHash('sha256').update(bytes).digest('hex');
  const manifest = modelManifest(path.join(fixtureDir, 'blob.bin'), CHUNK);
  fs.writeFileSync(path.join(fixtureDir, 'blob.bin.manifest.json'), JSON.stringify(manifest));
  // Another file of the same name at another URL.
  fs.mkdirSync(path.join(fixtureDir, 'other'));
  const other = crypto.randomBytes(3 * MiB + 7);
  fs.writeFileSync(path.join(fixtureDir, 'other', 'blob.bin'), other);
  otherSha = crypto.createHash('sha256').update(other).digest('hex');
  faults = createFaults();
  server = await start({
    port: 0,
    host: '127.0.0.1',
    mounts: [{ prefix: '/fixtures/', dir: fixtureDir }, ...defaultMounts(root)],
    hooks: [faults.hook],
  });
});

after(async () => {
  await server?.close();
  if (fixtureDir) fs.rmSync(fixtureDir, { recursive: true, force: true });
});

/** Runs `fn(browser)` in a fresh Chromium with `flags`, closing it after. */
async function withBrowser(flags, fn) {
  const browser = await launch(flags);
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}

/** A page on the dev server with an engine at `window.engine` and progress at `window.events`. */
async function openEngine(page, options = {}) {
  await page.goto(server.url, { waitUntil: 'load' });
  await page.evaluate(async (options) => {
    const m = await import('/pkg/index.js');
    window.engine = await m.createEngine(options);
    window.events = [];
  }, options);
}

/**
 * Lets the page's origin store only `room` more bytes than it holds now (the demo
 * page's service worker caches the app, 6 MB, once it installs: that is waited for).
 * Returns {lift} to give the real quota back.
 */
async function limitRoom(browser, room) {
  const { page } = browser;
  const usage = await page.evaluate(async () => {
    await navigator.serviceWorker.ready;
    return (await navigator.storage.estimate()).usage;
  });
  const origin = new URL(server.url).origin;
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + room });
  return { lift: () => cdp.send('Storage.overrideQuotaForOrigin', { origin }) };
}

/** Runs `engine[method](source)` in the page; resolves to {ok, value} or {ok: false, code, message}. */
function call(page, method, source = {}) {
  return page.evaluate(
    async ({ method, source }) => {
      try {
        const arg = method === 'deleteModel' ? source.id : { ...source, onProgress: (p) => window.events.push(p) };
        return { ok: true, value: await window.engine[method](arg) };
      } catch (e) {
        return { ok: false, code: e.code, message: e.message, name: e.name };
      }
    },
    { method, source },
  );
}

/** SHA-256 of a stored model file, read by the page itself (not by the engine). */
function storedSha(page, id) {
  return page.evaluate(async (id) => {
    const root = await navigator.storage.getDirectory();
    const dir = await (await (await root.getDirectoryHandle('edge-reason')).getDirectoryHandle('models')).getDirectoryHandle(id);
    const buf = await (await (await dir.getFileHandle('model.gguf')).getFile()).arrayBuffer();
    return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', buf)), (b) => b.toString(16).padStart(2, '0')).join('');
  }, id);
}

const blob = (id, extra = {}) => ({ url: FIXTURE, id, chunkBytes: CHUNK, concurrency: 3, retry: RETRY, ...extra });

function fresh() {
  faults.clear();
  faults.resetCounts();
}

/**
 * `fresh()` after a page reload. The old page's stalled requests may outlive it in the
 * browser's network stack: cut by `fresh()`, Chromium retries them at once on a new
 * connection (a GET whose reused connection closed before any answer), for nobody.
 * Their bytes are not the new download's, so counting starts after they are served.
 */
async function freshAfterReload() {
  fresh();
  await new Promise((r) => setTimeout(r, 500));
  faults.resetCounts();
}

describe('model storage (OPFS) under faults', { timeout: 600_000 }, () => {
  let browser;
  let page;

  before(async () => {
    browser = await launch(BASE_FLAGS);
    page = browser.page;
    await openEngine(page);
  });
  after(async () => {
    await browser?.close();
  });

  test('a clean download is stored, verified, listed, found in storage the second time, and deleted', async () => {
    fresh();
    const r = await call(page, 'download', blob('clean', { sha256: fixtureSha }));
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(r.value.sha256, fixtureSha);
    assert.equal(r.value.fromCache, false);
    assert.equal(typeof r.value.persisted, 'boolean', 'the page asked navigator.storage.persist()');
    assert.equal(await storedSha(page, 'clean'), fixtureSha);
    // One probe byte, then every byte once.
    assert.equal(faults.count(FIXTURE).bytes, SIZE + 1);
    const events = await page.evaluate(() => window.events.splice(0));
    const phases = [...new Set(events.map((e) => e.phase))];
    assert.deepEqual(phases, ['download', 'verify']);
    const last = events.filter((e) => e.phase === 'download').pop();
    assert.equal(last.loadedBytes, SIZE);
    assert.equal(last.totalBytes, SIZE);
    assert.ok(last.bytesPerSec > 0 && Number.isFinite(last.etaSec), JSON.stringify(last));

    const list = await call(page, 'listModels');
    const entry = list.value.find((m) => m.id === 'clean');
    assert.deepEqual(
      { size: entry.size, storedBytes: entry.storedBytes, complete: entry.complete, sha256: entry.sha256 },
      { size: SIZE, storedBytes: SIZE, complete: true, sha256: fixtureSha },
    );

    const before = faults.count(FIXTURE).requests;
    const again = await call(page, 'download', blob('clean'));
    assert.ok(again.ok && again.value.fromCache, JSON.stringify(again));
    assert.equal(faults.count(FIXTURE).requests, before, 'a stored model must not touch the network');

    assert.deepEqual(await call(page, 'deleteModel', { id: 'clean' }), { ok: true, value: true });
    assert.ok(!(await call(page, 'listModels')).value.some((m) => m.id === 'clean'));
  });

  test('a connection dropped in the middle of a chunk resumes inside that chunk', async () => {
    fresh();
    const at = 5 * CHUNK;
    faults.add({ path: FIXTURE, kind: 'drop', afterBytes: 300_000, when: (r) => r?.start === at });
    const r = await call(page, 'download', blob('drop', { sha256: fixtureSha }));
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(await storedSha(page, 'drop'), fixtureSha);
    assert.ok(r.value.retries >= 1, JSON.stringify(r.value));
    const c = faults.count(FIXTURE);
    const resumed = c.ranges.filter((h) => h && Number(/bytes=(\d+)-/.exec(h)[1]) > at && Number(/bytes=(\d+)-/.exec(h)[1]) < at + CHUNK);
    assert.equal(resumed.length, 1, `expected one request resuming inside chunk 5, saw ${JSON.stringify(c.ranges)}`);
    assert.ok(c.bytes <= SIZE + 1 + 64 * 1024, `server sent ${c.bytes} bytes for a ${SIZE}-byte file`);
  });

  test('HTTP 500 three times is retried with growing backoff, then succeeds', async () => {
    fresh();
    const at = 2 * CHUNK;
    faults.add({ path: FIXTURE, kind: 'status', status: 500, times: 3, when: (r) => r?.start === at });
    const r = await call(page, 'download', blob('http500', { sha256: fixtureSha }));
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(await storedSha(page, 'http500'), fixtureSha);
    const c = faults.count(FIXTURE);
    assert.equal(c.statuses.filter((s) => s === 500).length, 3);
    assert.ok(r.value.retries >= 3);
    const times = c.ranges.flatMap((h, i) => (h?.startsWith(`bytes=${at}-`) ? [c.times[i]] : []));
    assert.equal(times.length, 4, 'three failures and one success');
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    // Backoff 40, 80, 160 ms (+-20% jitter).
    gaps.forEach((g, i) => assert.ok(g >= 0.8 * RETRY.baseDelayMs * 2 ** i - 5, `gap ${i} is ${g} ms: ${gaps}`));
    assert.equal(c.bytes, SIZE + 1);
  });

  test('a corrupted chunk is caught by its manifest hash and only that chunk is refetched', async () => {
    fresh();
    const offset = 7 * CHUNK + 4242;
    faults.add({ path: FIXTURE, kind: 'corrupt', offset, when: (r) => r?.start === 7 * CHUNK });
    const r = await call(page, 'download', { ...blob('corrupt'), manifestUrl: `${FIXTURE}.manifest.json` });
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(r.value.sha256, fixtureSha);
    assert.equal(await storedSha(page, 'corrupt'), fixtureSha);
    assert.equal(r.value.refetchedChunks, 1);
    assert.equal(faults.count(FIXTURE).bytes, SIZE + 1 + CHUNK, 'exactly one chunk fetched twice');
  });

  test('with only the whole-file SHA-256, a corrupted chunk is found at verification and rewritten', async () => {
    fresh();
    faults.add({ path: FIXTURE, kind: 'corrupt', offset: 3 * CHUNK + 17, when: (r) => r?.start === 3 * CHUNK });
    const r = await call(page, 'download', blob('corrupt-sha', { sha256: fixtureSha }));
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(await storedSha(page, 'corrupt-sha'), fixtureSha);
    assert.equal(r.value.refetchedChunks, 1, 'only the corrupted chunk differs on the second fetch');
  });

  test('a corrupted chunk that stays corrupted is an INTEGRITY error and nothing claims to be complete', async () => {
    fresh();
    faults.add({ path: FIXTURE, kind: 'corrupt', offset: 9 * CHUNK, times: Infinity, when: (r) => r?.start === 9 * CHUNK });
    const r = await call(page, 'download', { ...blob('corrupt-always'), manifestUrl: `${FIXTURE}.manifest.json` });
    assert.equal(r.code, 'INTEGRITY', JSON.stringify(r));
    const entry = (await call(page, 'listModels')).value.find((m) => m.id === 'corrupt-always');
    assert.equal(entry.complete, false);
    faults.clear();
  });

  test('a server that ignores Range still gives a complete, verified file', async () => {
    fresh();
    faults.add({ path: FIXTURE, kind: 'noRange', times: Infinity });
    const r = await call(page, 'download', blob('norange', { sha256: fixtureSha }));
    assert.ok(r.ok, `download failed: ${r.code} ${r.message}`);
    assert.equal(await storedSha(page, 'norange'), fixtureSha);
    const c = faults.count(FIXTURE);
    assert.ok(c.statuses.every((s) => s === 200), JSON.stringify(c.statuses));
    faults.clear();
  });

  test('an aborted download stops with ABORTED and the next one fetches only the rest', async () => {
    fresh();
    faults.add({ path: FIXTURE, kind: 'stall', times: Infinity, when: (r) => r && r.start >= 4 * CHUNK });
    const result = page.evaluate(async (source) => {
      const ac = new AbortController();
      window.abortDownload = () => ac.abort();
      try {
        await window.engine.download({ ...source, signal: ac.signal });
        return { ok: true };
      } catch (e) {
        return { ok: false, code: e.code, message: e.message };
      }
    }, blob('abort'));
    await waitForStored(page, 'abort', 4 * CHUNK);
    await page.evaluate(() => window.abortDownload());
    const r = await result;
    assert.equal(r.code, 'ABORTED', JSON.stringify(r));
    fresh();
    const again = await call(page, 'download', blob('abort', { sha256: fixtureSha }));
    assert.ok(again.ok, JSON.stringify(again));
    assert.equal(faults.count(FIXTURE).bytes, SIZE - 4 * CHUNK + 1);
  });

  test('a stored model is bound to its URL: another file of the same name is fetched, the same URL is not', async () => {
    fresh();
    const first = await call(page, 'download', { url: FIXTURE, chunkBytes: CHUNK, retry: RETRY });
    assert.ok(first.ok, JSON.stringify(first));
    assert.equal(first.value.id, 'blob.bin');
    const again = await call(page, 'download', { url: FIXTURE, chunkBytes: CHUNK, retry: RETRY });
    assert.ok(again.ok && again.value.fromCache, JSON.stringify(again));
    // Same name, other URL, no sha256: the stored copy is not taken for it.
    const other = await call(page, 'download', { url: '/fixtures/other/blob.bin', chunkBytes: CHUNK, retry: RETRY });
    assert.ok(other.ok, JSON.stringify(other));
    assert.equal(other.value.fromCache, false);
    assert.equal(other.value.sha256, otherSha);
    assert.equal(await storedSha(page, 'blob.bin'), otherSha);
    assert.deepEqual(await call(page, 'deleteModel', { id: 'blob.bin' }), { ok: true, value: true });
  });

  test('malformed input gets a clear error code', async () => {
    fresh();
    const bad = await call(page, 'download', { url: FIXTURE, id: '../etc' });
    assert.equal(bad.code, 'INVALID_ARGUMENT');
    const missing = await call(page, 'download', { url: '/fixtures/missing.bin', retry: RETRY });
    assert.equal(missing.code, 'NETWORK');
    assert.match(missing.message, /404/);
    const notStored = await call(page, 'load', { id: 'never-downloaded' });
    assert.equal(notStored.code, 'NOT_FOUND');
    const notLoaded = await page.evaluate(() => window.engine.generate('hi').catch((e) => e.code));
    assert.equal(notLoaded, 'NOT_LOADED');
    // Random bytes are not a GGUF: the wasm loader's error crosses the worker with its code.
    const notGguf = await call(page, 'load', blob('clean2', { backend: 'cpu' }));
    assert.equal(notGguf.code, 'UNSUPPORTED_MODEL', JSON.stringify(notGguf));
    assert.match(notGguf.message, /not a GGUF/);
    // This browser runs without WebGPU: asking for it is NO_WEBGPU, not a silent fallback.
    if (fs.existsSync(modelPath)) {
      const noGpu = await call(page, 'load', { url: MODEL_URL, backend: 'webgpu' });
      assert.equal(noGpu.code, 'NO_WEBGPU', JSON.stringify(noGpu));
    }
  });
});

/** Waits until model `id` has at least `bytes` stored (its manifest, read by the worker). */
async function waitForStored(page, id, bytes, { storage = 'auto', timeoutMs = 60_000 } = {}) {
  const t0 = Date.now();
  for (;;) {
    const list = await page.evaluate(async (storage) => {
      const m = await import('/pkg/index.js');
      // A second engine only reads the manifests: listing takes no lock.
      window.lister ??= await m.createEngine({ storage });
      return window.lister.listModels();
    }, storage);
    const entry = list.find((m) => m.id === id);
    if (entry && entry.storedBytes >= bytes) return entry;
    if (Date.now() - t0 > timeoutMs) throw new Error(`model ${id} never reached ${bytes} bytes: ${JSON.stringify(entry)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('serve.mjs --faults: rules and counters over HTTP at /__faults', async () => {
  const f = createFaults();
  const srv = await start({ port: 0, host: '127.0.0.1', mounts: [{ prefix: '/fixtures/', dir: fixtureDir }], hooks: [f.hook], control: f.control });
  try {
    const at = (p) => new URL(p, srv.url).href;
    const post = await fetch(at('/__faults'), { method: 'POST', body: JSON.stringify({ path: FIXTURE, kind: 'status', status: 503, fromOffset: 100 }) });
    assert.equal(post.status, 200);
    assert.equal((await fetch(at(FIXTURE), { headers: { Range: 'bytes=0-9' } })).status, 206, 'the rule is only for ranges from 100');
    assert.equal((await fetch(at(FIXTURE), { headers: { Range: 'bytes=100-109' } })).status, 503);
    assert.equal((await fetch(at(FIXTURE), { headers: { Range: 'bytes=100-109' } })).status, 206, 'fired once');
    const counts = await (await fetch(at('/__faults'))).json();
    assert.equal(counts[FIXTURE].requests, 3);
    assert.equal(counts[FIXTURE].bytes, 20);
    await fetch(at('/__faults'), { method: 'DELETE' });
    assert.deepEqual(await (await fetch(at('/__faults'))).json(), {});
    // Same origin only, and a rule is small.
    const cross = await fetch(at('/__faults'), { method: 'POST', headers: { Origin: 'http://evil.example' }, body: '{}' });
    assert.equal(cross.status, 403);
    const huge = await fetch(at('/__faults'), { method: 'POST', body: 'x'.repeat(200 << 10) }).catch((e) => ({ status: `failed: ${e.message}` }));
    assert.ok(huge.status === 413 || String(huge.status).startsWith('failed'), `a 200 KiB rule: ${huge.status}`);
    assert.deepEqual(await (await fetch(at('/__faults'))).json(), {}, 'neither added a rule');
  } finally {
    await srv.close();
  }
});

describe('model storage across reloads, tabs and quota', { timeout: 600_000 }, () => {
  test('a page reloaded at half the download fetches only the missing half after the reload', async () => {
    fresh();
    await withBrowser(BASE_FLAGS, async (browser) => {
      const { page } = browser;
      await openEngine(page);
      const half = 6 * CHUNK;
      faults.add({ path: FIXTURE, kind: 'stall', times: Infinity, when: (r) => r && r.start >= half });
      page.evaluate((source) => window.engine.download(source).catch(() => {}), blob("reload")).catch(() => {});
      await waitForStored(page, 'reload', half);
      await page.reload({ waitUntil: 'load' });
      await freshAfterReload();
      await openEngine(page);
      const r = await call(page, 'download', blob('reload', { sha256: fixtureSha }));
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(await storedSha(page, 'reload'), fixtureSha);
      assert.equal(faults.count(FIXTURE).bytes, SIZE - half + 1, 'only the missing half (and one probe byte)');
    });
  });

  test('two tabs loading the same model download it once and both get the verified file', async () => {
    fresh();
    await withBrowser(BASE_FLAGS, async (browser) => {
      const pageA = browser.page;
      const pageB = await browser.context.newPage();
      await openEngine(pageA);
      await openEngine(pageB);
      const [a, b] = await Promise.all([call(pageA, 'download', blob('tabs', { sha256: fixtureSha })), call(pageB, 'download', blob('tabs', { sha256: fixtureSha }))]);
      assert.ok(a.ok && b.ok, JSON.stringify({ a, b }));
      assert.equal(a.value.sha256, fixtureSha);
      assert.equal(b.value.sha256, fixtureSha);
      assert.equal([a, b].filter((r) => r.value.fromCache).length, 1, 'the second tab waits and finds it stored');
      assert.equal(faults.count(FIXTURE).bytes, SIZE + 1);
      assert.equal(await storedSha(pageB, 'tabs'), fixtureSha);
    });
  });

  test('a quota too small is QUOTA_EXCEEDED and nothing claims to be complete', async () => {
    fresh();
    await withBrowser(BASE_FLAGS, async (browser) => {
      const { page } = browser;
      await openEngine(page);
      const quota = await limitRoom(browser, 4 * MiB);
      // Chromium enforces the override on writes (navigator.storage.estimate() still
      // shows the real quota), so this exercises the write-time check.
      const r = await call(page, 'download', blob('quota'));
      assert.equal(r.code, 'QUOTA_EXCEEDED', JSON.stringify(r));
      assert.match(r.message, /browser storage .*delete cached models/);
      const entry = (await call(page, 'listModels')).value.find((m) => m.id === 'quota');
      assert.equal(entry?.complete ?? false, false, JSON.stringify(entry));
      assert.ok((entry?.storedBytes ?? 0) <= 4 * MiB, JSON.stringify(entry));
      // With room again, the download resumes from what was kept.
      await quota.lift();
      const kept = entry?.storedBytes ?? 0;
      fresh();
      const again = await call(page, 'download', blob('quota', { sha256: fixtureSha }));
      assert.ok(again.ok, JSON.stringify(again));
      assert.equal(faults.count(FIXTURE).bytes, SIZE - kept + 1);
    });
  });

  test('with no room at all, a download is QUOTA_EXCEEDED and listing and deleting still work', async () => {
    fresh();
    await withBrowser(BASE_FLAGS, async (browser) => {
      const { page } = browser;
      await openEngine(page);
      await limitRoom(browser, 0);
      const r = await call(page, 'download', blob('noroom'));
      assert.equal(r.code, 'QUOTA_EXCEEDED', JSON.stringify(r));
      assert.match(r.message, /delete cached models/);
      const listed = await call(page, 'listModels');
      assert.ok(listed.ok, JSON.stringify(listed));
      assert.equal(listed.value.find((m) => m.id === 'noroom')?.complete ?? false, false);
      const removed = await call(page, 'deleteModel', { id: 'noroom' });
      assert.ok(removed.ok, JSON.stringify(removed));
    });
  });
});

describe('the default model through the worker, then offline', { timeout: 900_000 }, () => {
  test('downloads, loads tensor by tensor on WebGPU, generates, and loads again with the network off', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    fresh();
    await withBrowser([...BASE_FLAGS, ...WEBGPU_FLAGS], async (browser) => {
      const { page } = browser;
      await openEngine(page);
      const source = { url: MODEL_URL, manifestUrl: `${MODEL_URL}.manifest.json`, backend: 'webgpu' };
      const first = await call(page, 'load', source);
      assert.ok(first.ok, JSON.stringify(first));
      assert.equal(first.value.fromCache, false);
      assert.equal(first.value.backend.backend, 'webgpu', JSON.stringify(first.value.backend));
      const size = fs.statSync(modelPath).size;
      assert.equal(first.value.size, size);
      const events = await page.evaluate(() => window.events.splice(0));
      assert.deepEqual([...new Set(events.map((e) => e.phase))], ['download', 'verify', 'upload', 'ready']);

      // Peak wasm memory stays under the largest tensor (token_embd, Q8_0) + 64 MiB.
      assert.ok(first.value.memoryBytes < WASM_MEMORY_BUDGET, `wasm memory ${first.value.memoryBytes} bytes`);

      const gen = (prompt) =>
        page.evaluate(async (prompt) => {
          const pieces = [];
          const g = await window.engine.generate(prompt, { max_tokens: 2, onText: (t) => pieces.push(t) });
          return { ids: g.ids, text: g.text, streamed: pieces.join('') };
        }, prompt);
      const online = await gen('The capital of France is');
      assert.equal(online.ids.length, 2);
      assert.equal(online.streamed, online.text);

      await browser.context.setOffline(true);
      const before = faults.count(MODEL_URL).requests;
      const warm = await call(page, 'load', source);
      assert.ok(warm.ok, JSON.stringify(warm));
      assert.equal(warm.value.fromCache, true);
      const offline = await gen('The capital of France is');
      assert.deepEqual(offline.ids, online.ids);
      // By id, and with auto: the CPU, since this WebGPU is a software one.
      const byId = await call(page, 'load', { id: MODEL_NAME });
      assert.ok(byId.ok, JSON.stringify(byId));
      assert.equal(byId.value.backend.backend, 'cpu', JSON.stringify(byId.value.backend));
      assert.match(byId.value.backend.reason, /software/);
      assert.equal(faults.count(MODEL_URL).requests, before, 'nothing fetched while offline');
      t.diagnostic(
        `default model: cold load ${first.value.loadMs.toFixed(0)} ms (download ${first.value.seconds.toFixed(2)} s), ` +
          `warm start ${warm.value.loadMs.toFixed(0)} ms, wasm memory ${(first.value.memoryBytes / MiB).toFixed(1)} MiB`,
      );
    });
  });
});

/** SHA-256 of a model stored in the Cache API, read by the page itself. */
function cachedSha(page, id) {
  return page.evaluate(async (id) => {
    const cache = await caches.open('edge-reason-models');
    const prefix = `/__edge-reason__/models/${id}/bytes/`;
    const pieces = (await cache.keys())
      .map((r) => new URL(r.url).pathname)
      .filter((p) => p.startsWith(prefix))
      .sort((a, b) => Number(a.slice(prefix.length)) - Number(b.slice(prefix.length)));
    const blobs = await Promise.all(pieces.map(async (p) => (await cache.match(p)).blob()));
    const buf = await new Blob(blobs).arrayBuffer();
    return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', buf)), (b) => b.toString(16).padStart(2, '0')).join('');
  }, id);
}

describe('the Cache API store (where OPFS is missing)', { timeout: 900_000 }, () => {
  test('resumes after a reload at half, verifies, and lists and deletes', async () => {
    fresh();
    await withBrowser(BASE_FLAGS, async ({ page }) => {
      await openEngine(page, { storage: 'cache' });
      const half = 6 * CHUNK;
      faults.add({ path: FIXTURE, kind: 'stall', times: Infinity, when: (r) => r && r.start >= half });
      page.evaluate((source) => window.engine.download(source).catch(() => {}), blob('cached')).catch(() => {});
      await waitForStored(page, 'cached', half, { storage: 'cache' });
      await page.reload({ waitUntil: 'load' });
      await freshAfterReload();
      await openEngine(page, { storage: 'cache' });
      const r = await call(page, 'download', blob('cached', { sha256: fixtureSha }));
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(await cachedSha(page, 'cached'), fixtureSha);
      assert.equal(faults.count(FIXTURE).bytes, SIZE - half + 1);
      const entry = (await call(page, 'listModels')).value.find((m) => m.id === 'cached');
      assert.equal(entry?.complete, true, JSON.stringify(entry));
      assert.deepEqual(await call(page, 'deleteModel', { id: 'cached' }), { ok: true, value: true });
      assert.equal(await page.evaluate(async () => (await (await caches.open('edge-reason-models')).keys()).length), 0);
    });
  });

  test('the default model loads from the Cache API and generates what it does from OPFS', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    fresh();
    await withBrowser([...BASE_FLAGS, ...WEBGPU_FLAGS], async ({ page }) => {
      await page.goto(server.url, { waitUntil: 'load' });
      const out = await page.evaluate(async (url) => {
        const m = await import('/pkg/index.js');
        const run = async (storage) => {
          const e = await m.createEngine({ storage });
          const loaded = await e.load({ url, backend: 'webgpu' });
          const g = await e.generate('The capital of France is', { max_tokens: 2 });
          e.terminate();
          return { storage: loaded.storage, ids: g.ids, memory: loaded.memoryBytes };
        };
        return { cache: await run('cache'), opfs: await run('opfs') };
      }, MODEL_URL);
      assert.equal(out.cache.storage, 'cache');
      assert.equal(out.opfs.storage, 'opfs');
      assert.deepEqual(out.cache.ids, out.opfs.ids);
      assert.ok(out.cache.memory < WASM_MEMORY_BUDGET, `wasm memory ${out.cache.memory} bytes`);
    });
  });
});
