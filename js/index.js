// edge-reason's main-thread API: the engine runs in a dedicated Web Worker, so a page
// never blocks on the model. Every method returns a promise; failures are EngineErrors
// with a stable `code`.
//
//   import { createEngine } from 'edge-reason';
//   const engine = await createEngine();
//   await engine.load({ url, sha256, onProgress: (p) => console.log(p.phase, p.loadedBytes) });
//   const { text } = await engine.generate('Hello', { max_tokens: 32, onText: (t) => out.append(t) });

import { EngineError, ERROR_CODES, fromPlain } from './errors.js';

export { EngineError, ERROR_CODES };

/** Starts the engine's worker; resolves once its wasm is ready. */
export async function createEngine(options = {}) {
  const engine = new EdgeEngine(options);
  await engine.ready;
  return engine;
}

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

export class EdgeEngine extends EventTarget {
  #worker;
  #pending = new Map();
  #next = 1;

  #storage;

  /** `storage`: "auto" (OPFS, else the Cache API), "opfs" or "cache". */
  constructor({ workerUrl, storage = 'auto' } = {}) {
    super();
    this.#storage = storage;
    this.#worker = new Worker(workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module', name: 'edge-reason' });
    this.ready = new Promise((resolve, reject) => {
      this.#worker.addEventListener('message', (e) => {
        const msg = e.data;
        if (msg?.ready === true) {
          this.version = msg.version;
          resolve(this);
        } else if (msg?.ready === false) {
          reject(fromPlain(msg.error));
        } else {
          this.#receive(msg);
        }
      });
      this.#worker.addEventListener('error', (e) => {
        const err = new EngineError('INTERNAL', `the engine's worker failed: ${e.message ?? 'it could not start'}`);
        reject(err);
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      });
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
      }
      return;
    }
    this.#pending.delete(msg.id);
    p.signal?.removeEventListener('abort', p.onAbort);
    if (msg.ok) p.resolve(msg.value);
    else p.reject(fromPlain(msg.error));
  }

  #call(op, args, { signal, onProgress, onText } = {}) {
    if (signal?.aborted) return Promise.reject(new EngineError('ABORTED', 'the operation was aborted before it started'));
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.#worker.postMessage({ op: 'abort', args: { target: id } });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, { resolve, reject, onProgress, onText, signal, onAbort });
      this.#worker.postMessage({ id, op, args });
    });
  }

  /**
   * Downloads (or finds in storage) and loads a model: `{url}` or `{id}`, with
   * `sha256`, `size`, `manifestUrl`, `chunkBytes`, `concurrency`, `retry`, `backend`,
   * `kv_cache`, `signal` and `onProgress`.
   */
  load({ signal, onProgress, ...source } = {}) {
    return withPersist(this.#call('load', { ...source, storage: this.#storage }, { signal, onProgress }));
  }

  /** Downloads a model into storage without loading it (same source options as load). */
  download({ signal, onProgress, ...source } = {}) {
    return withPersist(this.#call('download', { ...source, storage: this.#storage }, { signal, onProgress }));
  }

  /** Models in browser storage: [{id, url, size, storedBytes, complete, sha256, updatedAt}]. */
  listModels() {
    return this.#call('listModels', { storage: this.#storage });
  }

  /** Deletes a stored model (unloading it first if it is the loaded one). */
  deleteModel(id) {
    return this.#call('deleteModel', { id, storage: this.#storage });
  }

  /** Generates after `prompt`; `options.onText(piece)` gets the text as it comes. */
  generate(prompt, { onText, ...options } = {}) {
    return this.#call('generate', { prompt, options }, { onText });
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
    this.#worker.terminate();
    const err = new EngineError('ABORTED', 'the engine was terminated');
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}
