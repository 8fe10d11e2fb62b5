// The engine's Web Worker, shared by both builds: owns the wasm module, the loaded model
// and browser storage. worker.js (one thread) and worker-threads.js (a rayon pool of
// Web Workers) are its two entry points: each imports its own wasm build statically and
// calls `serve`, so that bundlers follow every file from a literal import. The page
// talks to it only through index.js (createEngine); nothing here runs on the page's
// main thread.
//
// Protocol: the page first posts {op: "init", args: {threads, threadsReason, wasmUrl}};
// the worker answers {ready: true, version, threads, threadsReason} once its wasm (and
// its thread pool) runs, or {ready: false, error}. Then the page posts {id, op, args};
// the worker answers {id, ok: true, value} or {id, ok: false, error: {code, message}},
// and may post {id, event, data} before that ("progress" for loads and downloads,
// "text" for generation, "event" for the reasoning runtime's events).
// {op: "abort", args: {target}} aborts request `target`.

import { EngineError, asEngineError, toPlain } from './errors.js';
import { deleteModel, listModels, lockName, openStore } from './store.js';
import { ensureModel } from './download.js';

/** The wasm module's exports (set once `start` resolves). */
let wasm = null;
/** CPU threads, and why one when it is one (index.js decides, the build confirms). */
let cpu = { threads: 1, threadsReason: null };
/** The loaded engine (one per worker) and what it was loaded from. */
let engine = null;
let loaded = null;
const controllers = new Map();

// Model calls share one wasm object, so they run one after another.
let queue = Promise.resolve();
function serial(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => {});
  return run;
}

function requireEngine() {
  if (!engine) throw new EngineError('NOT_LOADED', 'no model is loaded: call load() first');
  return engine;
}

/** Opens a complete stored model read-only, as the reader the wasm loader takes, with
 *  "upload" progress as it is read. */
async function openStored(store, id, onProgress) {
  const manifest = await store.readManifest(id);
  if (!manifest?.complete) {
    throw new EngineError('NOT_FOUND', `model "${id}" is not complete in browser storage: load it from its URL`);
  }
  const { reader, close } = await store.openReader(id);
  const { size } = reader;
  if (size !== manifest.size) {
    close();
    throw new EngineError('CORRUPT_MODEL', `the stored model "${id}" is ${size} bytes but its manifest says ${manifest.size}: deleteModel("${id}") and load it again`);
  }
  let read = 0;
  let last = 0;
  const counted = {
    size,
    readInto(offset, target) {
      const n = reader.readInto(offset, target);
      read = Math.min(size, read + n);
      const now = performance.now();
      if (now - last > 100) {
        last = now;
        onProgress({ phase: 'upload', loadedBytes: read, totalBytes: size, bytesPerSec: null, etaSec: null, fromCache: true });
      }
      return n;
    },
  };
  return { reader: counted, close };
}

const ops = {
  async info() {
    return { version: wasm.version(), memoryBytes: wasm.wasmMemoryBytes(), model: loaded, backend: engine ? engine.backend : null, ...cpu };
  },

  detectBackend: () => wasm.detectBackend(),

  download: ({ storage, ...source }, { signal, onProgress }) =>
    ensureModel(source, { store: openStore(storage), signal, onProgress, hashReader: wasm.sha256OfReader }),

  listModels: ({ storage }) => listModels(openStore(storage)),

  deleteModel: ({ id, storage }) =>
    serial(async () => {
      if (loaded?.id === id) {
        engine?.free();
        engine = null;
        loaded = null;
      }
      return deleteModel(openStore(storage), id);
    }),

  load: (args, { signal, onProgress }) =>
    serial(async () => {
      const t0 = performance.now();
      const { backend, kv_cache, storage, ...source } = args;
      const store = openStore(storage);
      const stored = await ensureModel(source, { store, signal, onProgress, hashReader: wasm.sha256OfReader });
      if (signal.aborted) throw new EngineError('ABORTED', 'the load was aborted');
      const tUpload = performance.now();
      const next = await navigator.locks.request(lockName(stored.id), { mode: 'shared' }, async () => {
        const { reader, close } = await openStored(store, stored.id, onProgress);
        try {
          return await wasm.Engine.loadFromReader(reader, { backend, kv_cache });
        } finally {
          close();
        }
      });
      engine?.free();
      engine = next;
      loaded = { id: stored.id, size: stored.size, sha256: stored.sha256 };
      const now = performance.now();
      onProgress({ phase: 'ready', loadedBytes: stored.size, totalBytes: stored.size, bytesPerSec: null, etaSec: 0, fromCache: stored.fromCache });
      return {
        ...stored,
        storage: store.kind,
        backend: engine.backend,
        loadMs: now - t0,
        uploadMs: now - tUpload,
        memoryBytes: wasm.wasmMemoryBytes(),
        ...cpu,
      };
    }),

  unload: () =>
    serial(async () => {
      engine?.free();
      engine = null;
      loaded = null;
    }),

  // The engine yields to this worker's event loop before each step and each part of a
  // long prompt and asks should_stop (src/wasm/mod.rs, Stoppable): an abort lands
  // between them and rejects with ABORTED.
  generate: ({ prompt, options }, { signal, onText }) =>
    serial(() =>
      requireEngine().generate(
        prompt,
        options,
        (t) => {
          if (!signal.aborted) onText(t);
        },
        () => signal.aborted,
      ),
    ),

  tokenize: ({ text, special }) => serial(async () => requireEngine().tokenize(text, Boolean(special))),

  logits: ({ ids }) => serial(() => requireEngine().logits(Uint32Array.from(ids))),

  bench: ({ options }) => serial(() => requireEngine().bench(options)),

  loadAdapter: ({ name = 'reasoning', url, files, config, weights, budgetHint }) =>
    serial(async () => {
      const e = requireEngine();
      const given = await headFiles({ url, files, config, weights }, 'adapter_config.json', 'adapter_model.safetensors', MAX_BYTES.adapter);
      // An optional file: only a real answer counts (not a 404, nor an app's HTML page).
      const hintFile = url ? await fetchIn(url, 'budget_hint.json', { optional: true }) : null;
      const hint = hintFile ? await readText(hintFile, MAX_BYTES.config) : hintText(budgetHint);
      return e.loadAdapter(name, textOf(given.config, 'the adapter config'), bytesOf(given.weights, 'the adapter weights'), hint);
    }),

  unloadAdapter: ({ name }) => serial(async () => requireEngine().unloadAdapter(String(name))),

  loadSwitcher: loadHead('loadSwitcher', 'switcher'),

  loadVerifier: loadHead('loadVerifier', 'verifier'),

  // The engine yields to this worker's event loop between decode steps, so an abort
  // message lands mid-request; the next event then throws, which stops the runtime.
  reason: ({ request }, { signal, onEvent }) =>
    serial(() =>
      requireEngine().reason(request, (e) => {
        if (signal.aborted) throw new EngineError('ABORTED', 'the reasoning request was aborted');
        onEvent(e);
      }),
    ),

  benchReason: ({ options }) => serial(() => requireEngine().benchReason(options)),
};

/** A caller's budget hint (`{template, buckets}` or its JSON text) as the text the engine
 *  parses and checks, or undefined for none. */
function hintText(hint) {
  if (hint == null) return undefined;
  return typeof hint === 'string' ? hint : JSON.stringify(hint);
}

/** The op that loads a small head (`name`.json + `name`.safetensors, from a directory
 *  URL, the files' URLs or given) with `engine[method]`. */
function loadHead(method, name) {
  return ({ url, files, config, weights }) =>
    serial(async () => {
      const e = requireEngine();
      const given = await headFiles({ url, files, config, weights }, `${name}.json`, `${name}.safetensors`, MAX_BYTES.head);
      e[method](textOf(given.config, `the ${name} config`), bytesOf(given.weights, `the ${name} weights`));
      return { loaded: true };
    });
}

/** The most bytes read for each kind of file besides the model (a server may send
 *  anything): configs and budget hints are a few hundred bytes; a LoRA adapter's weights
 *  tens of MB in INT8 and a few hundred in f32 at a high rank; a switcher's or a
 *  verifier's weights well under 1 MB. */
export const MAX_BYTES = Object.freeze({ config: 1 << 20, adapter: 512 << 20, head: 16 << 20 });

/**
 * A head's `config` (JSON text) and `weights` (bytes): from `url`, a directory holding
 * `configName` and `weightsName`; from `files`, `{config, weights}` as URLs (the heads
 * shipped in the package, which index.js names so that bundlers emit them); or given.
 * Fetched files are read up to MAX_BYTES.config and `maxWeights` bytes.
 */
async function headFiles({ url, files, config, weights }, configName, weightsName, maxWeights) {
  if (!url && !files) return { config, weights };
  const [c, w] = url
    ? await Promise.all([fetchIn(url, configName), fetchIn(url, weightsName)])
    : await Promise.all([fetchFile(files.config), fetchFile(files.weights)]);
  const [configText, weightBytes] = await Promise.all([readText(c, MAX_BYTES.config), readBytes(w, maxWeights)]);
  return { config: configText, weights: weightBytes };
}

/** The body of `res` as bytes, refused (INVALID_ARGUMENT, naming the file) past `limit`
 *  bytes, whether the server declares its size or not: reading stops at the limit. */
export async function readBytes(res, limit) {
  const tooBig = () =>
    new EngineError('INVALID_ARGUMENT', `${res.url || 'a file'} is larger than ${limit} bytes, more than such a file can be: check the URL`);
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    res.body?.cancel().catch(() => {});
    throw tooBig();
  }
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const pieces = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      reader.cancel().catch(() => {});
      throw tooBig();
    }
    pieces.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of pieces) {
    bytes.set(p, at);
    at += p.byteLength;
  }
  return bytes;
}

/** The body of `res` as UTF-8 text, at most `limit` bytes (see readBytes). */
export async function readText(res, limit) {
  return new TextDecoder().decode(await readBytes(res, limit));
}

/** The response for the file `name` in the directory URL `dir`; with `optional`, null
 *  when the server has none: a 404, or an HTML page where the file should be (the
 *  index.html that single-page-app hosts and dev servers answer for unknown paths). */
function fetchIn(dir, name, { optional = false } = {}) {
  const url = new URL(name, new URL(dir.endsWith('/') ? dir : `${dir}/`, self.location.href)).href;
  return fetchFile(url, { optional });
}

/** The response for the file at `url` (see fetchIn for `optional`). */
async function fetchFile(url, { optional = false } = {}) {
  let res;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new EngineError('NETWORK', `could not fetch ${url} (${err?.message ?? err}): check the connection and try again`);
  }
  const html = res.ok && isHtmlPage(res);
  if ((res.status === 404 || html) && optional) return null;
  if (res.status === 404) throw new EngineError('NOT_FOUND', `${url} was not found (HTTP 404): check the directory URL`);
  if (html) {
    throw new EngineError('NOT_FOUND', `${url} answered an HTML page, not the file (a single-page-app fallback for a path that does not exist): check the directory URL`);
  }
  if (!res.ok) throw new EngineError('NETWORK', `${url} answered HTTP ${res.status}: try again later`);
  return res;
}

/** Whether a response is an HTML page (by its declared type: none of the heads' files is
 *  HTML, and a data: URL from a bundler carries the file's own type). */
function isHtmlPage(res) {
  const type = (res.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
  return type === 'text/html' || type === 'application/xhtml+xml';
}

function textOf(config, what) {
  if (typeof config === 'string') return config;
  if (config && typeof config === 'object') return JSON.stringify(config);
  throw new EngineError('INVALID_ARGUMENT', `${what} is missing: give {url} or {config, weights}`);
}

function bytesOf(weights, what) {
  if (weights instanceof Uint8Array) return weights;
  if (weights instanceof ArrayBuffer) return new Uint8Array(weights);
  throw new EngineError('INVALID_ARGUMENT', `${what} must be a Uint8Array or ArrayBuffer: give {url} or {config, weights}`);
}

/**
 * Serves the page's requests with the wasm build that `start(initArgs)` brings up;
 * `start` resolves to `{wasm, threads}` (the module's exports, the CPU threads it got).
 */
export function serve(start) {
  let ready = null;
  self.onmessage = async (event) => {
    const { id, op, args } = event.data ?? {};
    if (op === 'init') {
      if (!ready) {
        ready = init(start, args ?? {});
        ready.catch(() => {}); // told to the page; each later call rejects with it
      }
      return;
    }
    if (op === 'abort') {
      controllers.get(args?.target)?.abort();
      return;
    }
    const controller = new AbortController();
    controllers.set(id, controller);
    const post = (kind) => (data) => self.postMessage({ id, event: kind, data });
    try {
      if (!ready) throw new EngineError('INTERNAL', 'the engine was called before it was started (init)');
      await ready;
      const fn = ops[op];
      if (!fn) throw new EngineError('INVALID_ARGUMENT', `unknown operation ${op}`);
      const value = await fn(args ?? {}, {
        signal: controller.signal,
        onProgress: post('progress'),
        onText: post('text'),
        onEvent: post('event'),
      });
      self.postMessage({ id, ok: true, value });
    } catch (err) {
      // A trap (a Rust panic, or memory that could not grow) leaves the wasm instance in
      // no state to go on: the page is told (`fatal`), says what to do and starts a new
      // worker (index.js).
      const fatal = err instanceof WebAssembly.RuntimeError;
      const e = fatal
        ? new EngineError('INTERNAL', `the engine stopped on a fault (${err.message})`)
        : controller.signal.aborted
          ? new EngineError('ABORTED', 'the operation was aborted')
          : asEngineError(err);
      self.postMessage({ id, ok: false, error: toPlain(e), fatal });
    } finally {
      controllers.delete(id);
    }
  };
}

/** Brings the wasm build up and tells the page: {ready: true, ...} or {ready: false, error}. */
async function init(start, args) {
  try {
    const up = await start(args);
    wasm = up.wasm;
    cpu = { threads: up.threads, threadsReason: up.threads > 1 ? null : (args.threadsReason ?? null) };
    self.postMessage({ ready: true, version: wasm.version(), ...cpu });
  } catch (err) {
    const e = asEngineError(err);
    self.postMessage({ ready: false, error: toPlain(new EngineError(e.code, `the engine's wasm failed to start: ${e.message}`)) });
    throw e;
  }
}
