// edge-reason's main-thread API: the engine runs in a dedicated Web Worker, so a page
// never blocks on the model. Every method returns a promise; failures are EngineErrors
// with a stable `code`.
//
//   import { createEngine } from 'edge-reason';
//   const engine = await createEngine();
//   await engine.load({ url, sha256, onProgress: (p) => console.log(p.phase, p.loadedBytes) });
//   const { text } = await engine.generate('Hello', { max_tokens: 32, onText: (t) => out.append(t) });
//   await engine.loadAdapter();   // the reasoning adapter shipped in the package
//   const r = await engine.chat.completions.create({ messages, n: 8, reasoning: { mode: 'auto', budget: 256 } });

import { EngineError, ERROR_CODES, fromPlain } from './errors.js';
import { awaitStart, describeWorkerError } from './spawn.js';
import { chunksOf, requestOf, summarize, toCompletion } from './reason.js';

export { EngineError, ERROR_CODES };

/** Starts the engine's worker; resolves once its wasm is ready. */
export async function createEngine(options = {}) {
  const engine = new EdgeEngine(options);
  await engine.ready;
  return engine;
}

/** How long the engine's worker may take to load its wasm (and start its threads). */
const ENGINE_START_MS = 60_000;

const NOT_ISOLATED =
  'one CPU thread: the page is not cross-origin isolated (serve it with COOP: same-origin and COEP: require-corp for threads)';

/**
 * Asks the browser to keep this site's storage (so it does not evict a model under
 * pressure; only a page can ask), and adds the answer to `result` as `persisted`.
 */
async function withPersist(call) {
  const asked = globalThis.navigator?.storage?.persist
    ? navigator.storage.persist().catch(() => null)
    : Promise.resolve(null);
  const [result, persisted] = await Promise.all([call, asked]);
  return { ...result, persisted };
}

/**
 * The CPU threads to start for `threads` ("auto" or a number): `{threads, reason}`, the
 * reason saying why it is one thread when it is.
 */
function threadPlan(threads) {
  if (threads === 'auto') {
    if (!globalThis.crossOriginIsolated) return { threads: 1, reason: NOT_ISOLATED };
    const cores = globalThis.navigator?.hardwareConcurrency || 1;
    if (cores < 2) return { threads: 1, reason: 'one CPU thread: this device reports one core' };
    return { threads: Math.min(8, cores), reason: null };
  }
  const n = Number(threads);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new EngineError('INVALID_ARGUMENT', `threads ${JSON.stringify(threads)}: use "auto" or a whole number from 1 to 64`);
  }
  if (n === 1) return { threads: 1, reason: 'one CPU thread, as asked' };
  if (!globalThis.crossOriginIsolated) return { threads: 1, reason: NOT_ISOLATED };
  return { threads: n, reason: null };
}

/** `url` resolved against the page (the worker lives elsewhere), when it is a string. */
function absolute(url) {
  return typeof url === 'string' ? new URL(url, globalThis.location?.href).href : url;
}

/** A URL option (string or URL) as an absolute string, or undefined. */
function urlOption(url) {
  return url == null ? undefined : new URL(String(url), globalThis.location?.href).href;
}

/**
 * The engine's worker for one build. Each `new Worker(new URL(...), {type: 'module'})`
 * is written out literally: the form Vite and webpack turn into a bundled worker (with
 * the wasm it imports); `workerUrl` / `threadsWorkerUrl` replace them by hand.
 */
function engineWorker(multiThreaded, { workerUrl, threadsWorkerUrl }) {
  const url = multiThreaded ? threadsWorkerUrl : workerUrl;
  if (url != null) return new Worker(urlOption(url), { type: 'module', name: multiThreaded ? 'edge-reason-threads' : 'edge-reason' });
  // Distinct names: webpack names each worker's chunk by it.
  return multiThreaded
    ? new Worker(new URL('./worker-threads.js', import.meta.url), { type: 'module', name: 'edge-reason-threads' })
    : new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'edge-reason' });
}

/**
 * The reasoning heads shipped in the package (trained for the default model,
 * SmolLM2-135M-Instruct): each file's URL written out, so that bundlers emit them.
 */
const SHIPPED_HEADS = {
  adapter: () => ({
    config: new URL('./reasoning/adapter/adapter_config.json', import.meta.url).href,
    weights: new URL('./reasoning/adapter/adapter_model.safetensors', import.meta.url).href,
  }),
  switcher: () => ({
    config: new URL('./reasoning/switcher/switcher.json', import.meta.url).href,
    weights: new URL('./reasoning/switcher/switcher.safetensors', import.meta.url).href,
  }),
};

/** A head source with nothing in it means the shipped head. */
function headSource(source, shipped) {
  const { url, config, weights, ...rest } = source;
  if (url == null && config == null && weights == null) return { ...rest, files: shipped() };
  return { ...rest, url: absolute(url), config, weights };
}

/**
 * The error of a call that a fault ended (`what` failed: a trap in the wasm, or the
 * worker itself) and what to do next: load the model again, except after a load, which
 * would fail the same way with the same file.
 */
function faultError(op, what) {
  const next =
    op === 'load'
      ? " while loading a model; it restarts with no model loaded: the model may be too large for this device's memory, or hostile (a chat template that builds strings without end); try another model"
      : '; it restarts with no model loaded: load the model again';
  return new EngineError('INTERNAL', what + next);
}

export class EdgeEngine extends EventTarget {
  #worker = null;
  #options;
  #terminated = false;
  #pending = new Map();
  #next = 1;

  #storage;

  /**
   * `storage`: "auto" (OPFS, else the Cache API), "opfs" or "cache".
   * `threads`: CPU threads for the CPU path, "auto" (every core, up to 8, when the page
   * is cross-origin isolated; else 1) or a number (1 is the single-threaded build).
   * `workerUrl`, `wasmUrl`, `threadsWorkerUrl`, `threadsWasmUrl`: where the worker and
   * wasm of each build are, for setups that do not follow `new URL(..., import.meta.url)`.
   */
  constructor(options = {}) {
    super();
    this.#options = options;
    this.#storage = options.storage ?? 'auto';
    this.ready = this.#boot();
  }

  /** Starts the engine's worker (the multi-threaded one first when threads are asked
   *  for and possible); resolves to this engine once it answers. */
  #boot() {
    const { workerUrl, wasmUrl, threadsWorkerUrl, threadsWasmUrl, threads = 'auto' } = this.#options;
    const plan = threadPlan(threads);
    const urls = { workerUrl, threadsWorkerUrl };
    const start = async (multiThreaded, reason) => {
      const worker = engineWorker(multiThreaded, urls);
      const started = awaitStart(worker, {
        what: multiThreaded ? "the engine's multi-threaded worker (worker-threads.js)" : "the engine's worker (worker.js)",
        timeoutMs: ENGINE_START_MS,
        answer: (msg) => (msg?.ready === true ? { ok: true, value: msg } : msg?.ready === false ? { ok: false, code: msg.error?.code, message: msg.error?.message } : null),
      });
      worker.postMessage({
        op: 'init',
        args: { threads: plan.threads, threadsReason: reason, wasmUrl: urlOption(multiThreaded ? threadsWasmUrl : wasmUrl) },
      });
      return { worker, ready: await started };
    };
    return (async () => {
      let up = null;
      let reason = plan.reason;
      if (plan.threads > 1) {
        try {
          up = await start(true, null);
        } catch (err) {
          reason = `one CPU thread: the multi-threaded build failed to start (${err.message})`;
        }
      }
      up ??= await start(false, reason);
      if (this.#terminated) {
        up.worker.terminate();
        throw new EngineError('ABORTED', 'the engine was terminated while it started');
      }
      this.#attach(up.worker);
      this.version = up.ready.version;
      this.threads = up.ready.threads;
      this.threadsReason = up.ready.threads > 1 ? null : up.ready.threadsReason;
      return this;
    })();
  }

  /**
   * After a fault that leaves the worker unusable (`what` failed: a trap in the wasm,
   * or the worker itself): every waiting call fails with INTERNAL saying so, the worker
   * is replaced by a fresh one, and later calls go to it (with no model loaded).
   */
  #restart(what) {
    for (const p of this.#pending.values()) p.reject(faultError(p.op, what));
    this.#pending.clear();
    this.#worker?.terminate();
    this.#worker = null;
    if (this.#terminated) return;
    this.ready = this.#boot();
    this.ready.catch(() => {}); // the next call sees the failure, if any
  }

  /** Routes the started worker's messages to the calls waiting for them; a worker that
   *  dies fails the calls waiting. */
  #attach(worker) {
    this.#worker = worker;
    worker.addEventListener('message', (e) => this.#receive(e.data));
    worker.addEventListener('error', (e) => {
      if (worker !== this.#worker) return;
      this.#restart(`the engine's worker failed (${describeWorkerError(e)})`);
    });
  }

  #receive(msg) {
    const p = this.#pending.get(msg?.id);
    if (!p) return;
    if (msg.event) {
      if (msg.event === 'progress') {
        p.onProgress?.(msg.data);
        this.dispatchEvent(new CustomEvent('progress', { detail: msg.data }));
      } else if (msg.event === 'text') {
        p.onText?.(msg.data);
      } else if (msg.event === 'event') {
        p.onEvent?.(msg.data);
      }
      return;
    }
    this.#pending.delete(msg.id);
    p.signal?.removeEventListener('abort', p.onAbort);
    if (msg.ok) p.resolve(msg.value);
    else p.reject(msg.fatal ? faultError(p.op, msg.error.message) : fromPlain(msg.error));
    if (msg.fatal) this.#restart(msg.error.message);
  }

  async #call(op, args, { signal, onProgress, onText, onEvent } = {}) {
    if (this.#terminated) throw new EngineError('ABORTED', 'the engine was terminated: create a new one with createEngine()');
    if (!this.#worker) await this.ready;
    if (signal?.aborted) throw new EngineError('ABORTED', 'the operation was aborted before it started');
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.#worker.postMessage({ op: 'abort', args: { target: id } });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, { op, resolve, reject, onProgress, onText, onEvent, signal, onAbort });
      this.#worker.postMessage({ id, op, args });
    });
  }

  /**
   * Downloads (or finds in storage) and loads a model: `{url}` or `{id}`, with
   * `sha256`, `size`, `manifestUrl`, `chunkBytes`, `concurrency`, `retry`, `backend`,
   * `kv_cache`, `signal` and `onProgress`.
   */
  load({ signal, onProgress, ...source } = {}) {
    const args = { ...source, url: absolute(source.url), manifestUrl: absolute(source.manifestUrl), storage: this.#storage };
    return withPersist(this.#call('load', args, { signal, onProgress }));
  }

  /** Downloads a model into storage without loading it (same source options as load). */
  download({ signal, onProgress, ...source } = {}) {
    const args = { ...source, url: absolute(source.url), manifestUrl: absolute(source.manifestUrl), storage: this.#storage };
    return withPersist(this.#call('download', args, { signal, onProgress }));
  }

  /** Models in browser storage: [{id, url, size, storedBytes, complete, sha256, updatedAt}]. */
  listModels() {
    return this.#call('listModels', { storage: this.#storage });
  }

  /** Deletes a stored model (unloading it first if it is the loaded one). */
  deleteModel(id) {
    return this.#call('deleteModel', { id, storage: this.#storage });
  }

  /** Generates after `prompt`; `options.onText(piece)` gets the text as it comes, and
   *  `options.signal` stops it before the next token (rejecting with ABORTED). */
  generate(prompt, { onText, signal, ...options } = {}) {
    return this.#call('generate', { prompt, options }, { onText, signal });
  }

  tokenize(text, { special = false } = {}) {
    return this.#call('tokenize', { text, special });
  }

  /** Logits of the last position after `ids` (a Float32Array). */
  logits(ids) {
    return this.#call('logits', { ids: Array.from(ids) });
  }

  bench(options) {
    return this.#call('bench', { options });
  }

  /**
   * Makes a LoRA adapter resident under `name` (default "reasoning"): with no source, the
   * reasoning adapter shipped in the package (trained for the default model); `{url}` of
   * a directory with adapter_config.json + adapter_model.safetensors; or `{config,
   * weights}`. Several may be resident; a request names the one it reasons with.
   * An adapter trained with its thinking budget stated in the prompt carries how
   * (`budget_hint.json` in its directory, or `budgetHint`: `{template, buckets}`);
   * requests to it then state their budget that way unless they give `budget_hint`
   * themselves (`null` for none). Resolves to the adapter's summary and `budget_hint`.
   */
  loadAdapter({ name = 'reasoning', budgetHint, ...source } = {}) {
    return this.#call('loadAdapter', { name, budgetHint, ...headSource(source, SHIPPED_HEADS.adapter) });
  }

  unloadAdapter(name) {
    return this.#call('unloadAdapter', { name });
  }

  /** Loads the switcher: with no source, the one shipped in the package (for the
   *  default model); `{url}` of a directory with switcher.json + switcher.safetensors;
   *  or `{config, weights}`. */
  loadSwitcher(source = {}) {
    return this.#call('loadSwitcher', headSource(source, SHIPPED_HEADS.switcher));
  }

  /** Loads the verifier head: `{url}` of a directory with verifier.json +
   *  verifier.safetensors, or `{config, weights}`; with `weighted`, it weighs each
   *  finished candidate in the vote. */
  loadVerifier({ url, config, weights } = {}) {
    return this.#call('loadVerifier', { url: absolute(url), config, weights });
  }

  /**
   * One request of the reasoning runtime: `{prompt | messages, raw, adapter, options:
   * {mode, n, budget: {think, answer}, temperature, top_k, top_p, seed, weighted,
   * early_stop, max_tokens}}`. `onEvent(event)` gets each event as it happens (route,
   * token, candidate_done, vote, done). Resolves to the events summarized: {answer,
   * route, candidates: [{index, thinking, text, done}], vote, stats, events}. An
   * AbortSignal `signal` stops the request between two decode steps (rejects with
   * ABORTED; the model stays loaded).
   */
  async reason(request, { onEvent, signal } = {}) {
    const events = [];
    await this.#call('reason', { request }, {
      signal,
      onEvent: (e) => {
        events.push(e);
        onEvent?.(e);
      },
    });
    return { ...summarize(events), events };
  }

  /** The reasoning runtime's benchmark (`edge-reason bench-reason --json`). */
  benchReason(options) {
    return this.#call('benchReason', { options });
  }

  /**
   * OpenAI-style chat completions over the reasoning runtime:
   * `engine.chat.completions.create({messages, n, stream, temperature, top_p,
   * max_tokens, seed, reasoning: {mode, budget, answer_tokens, weighted}, adapter})`
   * resolves to a `chat.completion` with one choice per candidate plus `route`, `vote`,
   * `usage` and `stats`; with `stream: true`, to an async iterable of
   * `chat.completion.chunk`s (the last one carries the vote and usage). `signal` aborts
   * it; leaving a stream's loop early (`break`) stops the request too.
   */
  get chat() {
    return { completions: { create: (params) => this.#createCompletion(params) } };
  }

  async #createCompletion({ stream = false, signal, ...params } = {}) {
    const request = requestOf(params);
    const meta = {
      id: `chatcmpl-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
      created: Math.floor(Date.now() / 1000),
      model: (await this.info()).model?.id ?? 'edge-reason',
    };
    if (!stream) {
      const { events } = await this.reason(request, { signal });
      return toCompletion(events, meta);
    }
    // The caller's signal, or the consumer leaving the loop, stops the request.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    if (signal?.aborted) stop.abort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    // A queue between the worker's events and the consumer's iteration.
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const state = {};
    const push = (items) => {
      queue.push(...items);
      wake?.();
    };
    const done = this.reason(request, { signal: stop.signal, onEvent: (e) => push(chunksOf(e, meta, state)) });
    done.then(
      () => {
        finished = true;
        wake?.();
      },
      (err) => {
        failure = err;
        wake?.();
      },
    );
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            if (queue.length) {
              yield queue.shift();
            } else if (failure) {
              throw failure;
            } else if (finished) {
              return;
            } else {
              await new Promise((r) => (wake = r));
              wake = null;
            }
          }
        } finally {
          signal?.removeEventListener('abort', onAbort);
          if (!finished && !failure) {
            // Left early: stop decoding for nobody, and wait until the worker is free.
            stop.abort();
            await done.catch(() => {});
          }
        }
      },
    };
  }

  /** {version, memoryBytes (wasm memory, its peak), model, backend}. */
  info() {
    return this.#call('info');
  }

  detectBackend() {
    return this.#call('detectBackend');
  }

  unload() {
    return this.#call('unload');
  }

  /** Stops the worker; pending calls fail with ABORTED. */
  terminate() {
    this.#terminated = true;
    this.#worker?.terminate();
    const err = new EngineError('ABORTED', 'the engine was terminated');
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}
