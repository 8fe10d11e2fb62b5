// Where models live in the browser (worker only), behind one interface with two backends:
//
// - OPFS (the Origin Private File System, preferred): one directory per model,
//     edge-reason/models/<id>/model.gguf      written chunk by chunk (a sync access handle)
//     edge-reason/models/<id>/manifest.json   which chunks are complete, with their SHA-256
//   The manifest is replaced atomically (createWritable swaps the file in on close).
// - The Cache API, where OPFS (or its sync access handles) is missing: one cache entry
//   per chunk and one for the manifest; reads are synchronous through FileReaderSync on
//   the entries' Blobs, which the browser keeps on disk.
//
// Either way a manifest records a chunk only after its bytes are stored (and flushed),
// so a crash never leaves a chunk claimed but missing, and `complete` is set only after
// the whole file is verified.
//
// A store: {kind, readManifest(id), writeManifest(id, m), storedFileBytes(id),
// openWriter(id, {fresh}), openReader(id), list(), remove(id)}; a writer:
// {writeAt(offset, bytes), reader(), truncate(), close()}; a reader is the
// {size, readInto(offset, target)} the wasm loader takes.

import { EngineError, asEngineError } from './errors.js';

export const MANIFEST_FORMAT = 1;

/** The Web Lock name that guards one model's stored bytes. */
export const lockName = (id) => `edge-reason:model:${id}`;

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** Checks a model id: letters, digits, '.', '_', '-', at most 200. */
export function checkId(id) {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new EngineError(
      'INVALID_ARGUMENT',
      `model id ${JSON.stringify(id)} is not valid: use 1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return id;
}

/** The default id of a model at `url`: its file name. */
export function idFromUrl(url) {
  const name = decodeURIComponent(new URL(url, self.location.href).pathname.split('/').pop() || '');
  const id = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '').slice(0, 200);
  if (!id) throw new EngineError('INVALID_ARGUMENT', `cannot name a model after ${url}: pass an id`);
  return id;
}

/** Bytes of the chunks a manifest records as complete. */
export function storedBytes(m) {
  let n = 0;
  m.chunks.forEach((hash, i) => {
    if (hash) n += Math.min(m.chunkBytes, m.size - i * m.chunkBytes);
  });
  return n;
}

function parseManifest(text) {
  try {
    const m = JSON.parse(text);
    return m && m.format === MANIFEST_FORMAT && Array.isArray(m.chunks) ? m : null;
  } catch {
    return null;
  }
}

const stamp = (m) => JSON.stringify({ ...m, updatedAt: new Date().toISOString() });

/** What listModels() reports for a stored model. */
function summary(id, m) {
  return {
    id,
    url: m?.url ?? null,
    size: m?.size ?? null,
    storedBytes: m ? storedBytes(m) : 0,
    complete: Boolean(m?.complete),
    sha256: m?.sha256 ?? null,
    updatedAt: m?.updatedAt ?? null,
  };
}

const hasOpfs = () =>
  Boolean(globalThis.navigator?.storage?.getDirectory) &&
  typeof globalThis.FileSystemFileHandle?.prototype?.createSyncAccessHandle === 'function';
const hasCache = () => Boolean(globalThis.caches?.open) && typeof globalThis.FileReaderSync === 'function';

/** The store `kind` asks for: "opfs", "cache", or "auto" (OPFS where it works, else the Cache API). */
export function openStore(kind = 'auto') {
  if (kind === 'opfs' || (kind === 'auto' && hasOpfs())) {
    if (!hasOpfs()) throw new EngineError('STORAGE', 'this browser has no Origin Private File System with sync access handles: use storage "cache" or "auto"');
    return new OpfsStore();
  }
  if (kind === 'cache' || kind === 'auto') {
    if (!hasCache()) {
      throw new EngineError('STORAGE', 'this browser has neither the Origin Private File System nor the Cache API (private browsing?): use a current browser outside private mode');
    }
    return new CacheStore();
  }
  throw new EngineError('INVALID_ARGUMENT', `storage ${JSON.stringify(kind)}: use "auto", "opfs" or "cache"`);
}

// ------------------------------------------------------------------------- OPFS

const MODEL_FILE = 'model.gguf';
const MANIFEST_FILE = 'manifest.json';

/** A sync access handle as the reader the wasm loader and hasher take. */
const handleReader = (handle) => ({
  size: handle.getSize(),
  readInto: (offset, target) => handle.read(target, { at: offset }),
});

/**
 * The subdirectory `name` of `dir`, created when missing and `create` is set. An
 * existing one is opened without `create`: Chromium refuses even that with a full quota.
 */
async function subdir(dir, name, create) {
  try {
    return await dir.getDirectoryHandle(name);
  } catch (err) {
    if (err?.name !== 'NotFoundError' || !create) throw err;
    return await dir.getDirectoryHandle(name, { create: true });
  }
}

class OpfsStore {
  kind = 'opfs';

  /**
   * The models directory, or null when it does not exist and `create` is false (so
   * that listing and deleting work, and create nothing, when the quota is full).
   */
  async #models(create = false) {
    try {
      const root = await navigator.storage.getDirectory();
      return await subdir(await subdir(root, 'edge-reason', create), 'models', create);
    } catch (err) {
      if (err?.name === 'NotFoundError') return null;
      if (err?.name === 'QuotaExceededError') throw asEngineError(err);
      throw new EngineError('STORAGE', `cannot open browser storage: ${err?.message ?? err}`, { cause: err });
    }
  }

  /** The directory of model `id`, or null when it does not exist and `create` is false. */
  async #dir(id, create = false) {
    const models = await this.#models(create);
    if (!models) return null;
    try {
      return await subdir(models, checkId(id), create);
    } catch (err) {
      if (err?.name === 'NotFoundError') return null;
      throw asEngineError(err, 'STORAGE');
    }
  }

  async readManifest(id) {
    const dir = await this.#dir(id);
    if (!dir) return null;
    try {
      return parseManifest(await (await (await dir.getFileHandle(MANIFEST_FILE)).getFile()).text());
    } catch {
      return null;
    }
  }

  async writeManifest(id, manifest) {
    const dir = await this.#dir(id, true);
    const w = await (await dir.getFileHandle(MANIFEST_FILE, { create: true })).createWritable();
    try {
      await w.write(stamp(manifest));
      await w.close();
    } catch (err) {
      await w.abort().catch(() => {});
      throw asEngineError(err, 'STORAGE');
    }
  }

  async storedFileBytes(id) {
    try {
      return (await (await (await this.#dir(id)).getFileHandle(MODEL_FILE)).getFile()).size;
    } catch {
      return 0;
    }
  }

  async openWriter(id, { fresh }) {
    const dir = await this.#dir(id, true);
    let handle;
    try {
      handle = await (await dir.getFileHandle(MODEL_FILE, { create: true })).createSyncAccessHandle();
    } catch (err) {
      throw new EngineError('STORAGE', `cannot open the model file for writing (${err?.message ?? err}); close other tabs that load it`, { cause: err });
    }
    if (fresh) handle.truncate(0);
    return {
      async writeAt(offset, bytes) {
        const n = handle.write(bytes, { at: offset });
        handle.flush();
        return n;
      },
      reader: async () => handleReader(handle),
      async truncate() {
        handle.truncate(0);
      },
      close: () => handle.close(),
    };
  }

  async openReader(id) {
    const dir = await this.#dir(id);
    let handle;
    try {
      handle = await (await dir.getFileHandle(MODEL_FILE)).createSyncAccessHandle({ mode: 'read-only' });
    } catch (err) {
      throw new EngineError('STORAGE', `cannot open the stored model (${err?.message ?? err}); close other tabs that are downloading it`, { cause: err });
    }
    return { reader: handleReader(handle), close: () => handle.close() };
  }

  async list() {
    const out = [];
    const models = await this.#models();
    if (!models) return out;
    for await (const [id, handle] of models.entries()) {
      if (handle.kind === 'directory') out.push(summary(id, await this.readManifest(id)));
    }
    return out;
  }

  async remove(id) {
    try {
      const models = await this.#models();
      if (!models) return false;
      await models.removeEntry(checkId(id), { recursive: true });
      return true;
    } catch (err) {
      if (err?.name === 'NotFoundError') return false;
      throw asEngineError(err, 'STORAGE');
    }
  }
}

// -------------------------------------------------------------------- Cache API

const CACHE_NAME = 'edge-reason-models';

class CacheStore {
  kind = 'cache';

  /** Cache keys are URLs; these are never fetched. */
  #key(id, part) {
    return new URL(`/__edge-reason__/models/${checkId(id)}/${part}`, self.location.origin).href;
  }

  #cache() {
    return caches.open(CACHE_NAME).catch((err) => {
      throw new EngineError('STORAGE', `cannot open the Cache API storage: ${err?.message ?? err}`, { cause: err });
    });
  }

  /** The stored byte ranges of model `id`: [{start, key}] sorted by start. */
  async #pieces(id) {
    const prefix = this.#key(id, 'bytes/');
    const keys = await (await this.#cache()).keys();
    return keys
      .filter((r) => r.url.startsWith(prefix))
      .map((r) => ({ start: Number(r.url.slice(prefix.length)), key: r.url }))
      .sort((a, b) => a.start - b.start);
  }

  async readManifest(id) {
    const res = await (await this.#cache()).match(this.#key(id, 'manifest.json'));
    return res ? parseManifest(await res.text()) : null;
  }

  async writeManifest(id, manifest) {
    try {
      await (await this.#cache()).put(this.#key(id, 'manifest.json'), new Response(stamp(manifest)));
    } catch (err) {
      throw asEngineError(err, 'STORAGE');
    }
  }

  async storedFileBytes(id) {
    const m = await this.readManifest(id);
    return m ? storedBytes(m) : 0;
  }

  /** A synchronous reader over the stored pieces (Blobs read with FileReaderSync). */
  async #reader(id) {
    const cache = await this.#cache();
    const pieces = [];
    for (const p of await this.#pieces(id)) {
      const blob = await (await cache.match(p.key)).blob();
      pieces.push({ start: p.start, end: p.start + blob.size, blob });
    }
    const size = pieces.length ? pieces[pieces.length - 1].end : 0;
    const fr = new FileReaderSync();
    return {
      size,
      readInto(offset, target) {
        const p = pieces.find((q) => offset >= q.start && offset < q.end);
        if (!p) return 0;
        const n = Math.min(target.length, p.end - offset);
        target.set(new Uint8Array(fr.readAsArrayBuffer(p.blob.slice(offset - p.start, offset - p.start + n))));
        return n;
      },
    };
  }

  async #clearBytes(id) {
    const cache = await this.#cache();
    for (const p of await this.#pieces(id)) await cache.delete(p.key);
  }

  async openWriter(id, { fresh }) {
    if (fresh) await this.#clearBytes(id);
    const cache = await this.#cache();
    return {
      writeAt: async (offset, bytes) => {
        await cache.put(this.#key(id, `bytes/${offset}`), new Response(bytes));
        return bytes.length;
      },
      reader: () => this.#reader(id),
      truncate: () => this.#clearBytes(id),
      close: () => {},
    };
  }

  async openReader(id) {
    return { reader: await this.#reader(id), close: () => {} };
  }

  async list() {
    const cache = await this.#cache();
    const re = /\/__edge-reason__\/models\/([^/]+)\/manifest\.json$/;
    const out = [];
    for (const r of await cache.keys()) {
      const m = re.exec(new URL(r.url).pathname);
      if (m) out.push(summary(m[1], await this.readManifest(m[1])));
    }
    return out;
  }

  async remove(id) {
    const cache = await this.#cache();
    await this.#clearBytes(id);
    return cache.delete(this.#key(id, 'manifest.json'));
  }
}

// ------------------------------------------------------------ list and delete

/** Every model in `store`: [{id, url, size, storedBytes, complete, sha256, updatedAt}]. */
export async function listModels(store) {
  return (await store.list()).sort((a, b) => a.id.localeCompare(b.id));
}

/** Deletes model `id` (waiting for any download or load of it to finish). */
export async function deleteModel(store, id) {
  checkId(id);
  return navigator.locks.request(lockName(id), { mode: 'exclusive' }, () => store.remove(id));
}
