// Resumable, verified download of a model into OPFS (worker only).
//
// The file is cut into chunks (8 MiB by default) fetched with HTTP Range requests, a few
// at a time, each written at its offset into storage (store.js: OPFS through a sync
// access handle, else the Cache API), flushed, and only then recorded with its SHA-256 in the model's manifest (store.js). A reload, a crash
// or a lost connection resumes with the missing chunks; a dropped connection resumes
// inside the chunk. Transient failures (network errors, HTTP 408/425/429/5xx, a body
// cut short) are retried with exponential backoff. Integrity: per-chunk hashes from a
// model manifest catch a bad chunk at once (refetched once); an expected whole-file
// SHA-256 is checked at the end (a mismatch refetches every chunk once, rewriting the
// ones whose bytes changed). A server that ignores Range gets one streamed download.
// Writers hold an exclusive Web Lock per model, so two tabs never write the same file.

import { EngineError, asEngineError } from './errors.js';
import { MANIFEST_FORMAT, checkId, idFromUrl, lockName, storedBytes } from './store.js';

export const DEFAULT_CHUNK_BYTES = 8 << 20;
export const MIN_CHUNK_BYTES = 64 << 10;
export const MAX_CHUNK_BYTES = 16 << 20;
export const DEFAULT_CONCURRENCY = 4;
/** The largest model file a download accepts (whatever a server or manifest says). */
export const MAX_MODEL_BYTES = 64 * 2 ** 30;
export const DEFAULT_RETRY = Object.freeze({ attempts: 6, baseDelayMs: 500 });
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);
const PROGRESS_EVERY_MS = 100;

/** A transient failure: try again after a pause. */
class Retryable extends Error {}

/** Delay before retry `attempt` (1-based): base * 2^(attempt-1), +-20% jitter, <= 30 s. */
export function backoffMs(attempt, baseDelayMs) {
  const d = Math.min(baseDelayMs * 2 ** (attempt - 1), 30_000);
  return d * (0.8 + 0.4 * Math.random());
}

function aborted() {
  return new EngineError('ABORTED', 'the download was aborted; completed chunks are kept and the next load resumes');
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(aborted());
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(aborted());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

function normalizeSha(value, what) {
  if (value == null) return null;
  const v = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (!/^[0-9a-f]{64}$/.test(v)) throw new EngineError('INVALID_ARGUMENT', `${what} is not a SHA-256 (64 hex digits): ${String(value).slice(0, 80)}`);
  return v;
}

/**
 * `value` as a model size in bytes: a whole number from 1 to MAX_MODEL_BYTES, else an
 * error with `code` naming `what` (a server's or manifest's claim, or the caller's).
 */
export function checkedSize(value, what, code = 'NETWORK') {
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_MODEL_BYTES) {
    throw new EngineError(code, `${what} gives a size of ${String(value).slice(0, 40)} bytes; a model file is 1 byte to ${MAX_MODEL_BYTES / 2 ** 30} GiB: check the URL`);
  }
  return value;
}

/**
 * A model manifest ({size, sha256?, chunkBytes?, chunks?}) checked whatever it holds:
 * the size as `checkedSize`, chunkBytes a whole number of MIN_CHUNK_BYTES to
 * MAX_CHUNK_BYTES (also without chunks), chunks (which need chunkBytes) one SHA-256 per
 * chunk. Returns it normalized; throws INVALID_ARGUMENT naming the problem.
 */
export function validateManifest(m, url) {
  const bad = (why) => new EngineError('INVALID_ARGUMENT', `the model manifest ${url} ${why}`);
  if (m == null || typeof m !== 'object' || Array.isArray(m)) throw bad('is not an object {size, sha256?, chunkBytes?, chunks?}');
  const size = checkedSize(m.size, `the model manifest ${url}`, 'INVALID_ARGUMENT');
  let chunkBytes = null;
  if (m.chunkBytes != null) {
    if (!Number.isInteger(m.chunkBytes) || m.chunkBytes < MIN_CHUNK_BYTES || m.chunkBytes > MAX_CHUNK_BYTES) {
      throw bad(`has chunkBytes ${String(m.chunkBytes).slice(0, 40)}: use a whole number from ${MIN_CHUNK_BYTES} to ${MAX_CHUNK_BYTES}`);
    }
    chunkBytes = m.chunkBytes;
  }
  let chunks = null;
  if (m.chunks != null) {
    if (chunkBytes == null) throw bad('lists chunks without chunkBytes');
    const n = Math.max(1, Math.ceil(size / chunkBytes));
    if (!Array.isArray(m.chunks) || m.chunks.length !== n) {
      throw bad(`must list ${n} chunk hashes (${size} bytes in chunks of ${chunkBytes})`);
    }
    // Every chunk has its hash (a missing one would leave that chunk unchecked).
    chunks = m.chunks.map((h, i) => normalizeSha(h ?? '', `chunk ${i} of the model manifest`));
  }
  return { size, sha256: normalizeSha(m.sha256, 'the model manifest sha256'), chunkBytes, chunks };
}

/** `Content-Range: bytes a-b/total` as numbers, or null. */
export function parseContentRange(header) {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(header ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Progress events of one phase, at most every 100 ms (and always the last). */
class Progress {
  constructor(emit, phase, totalBytes, loadedBytes, fromCache = false) {
    Object.assign(this, { emit, phase, totalBytes, loadedBytes, fromCache });
    this.startBytes = loadedBytes;
    this.t0 = performance.now();
    this.last = 0;
  }

  set(loadedBytes) {
    this.loadedBytes = loadedBytes;
    this.maybe();
  }

  add(n) {
    this.set(this.loadedBytes + n);
  }

  maybe(force = false) {
    const now = performance.now();
    if (!force && now - this.last < PROGRESS_EVERY_MS) return;
    this.last = now;
    const seconds = (now - this.t0) / 1000;
    const bytesPerSec = seconds > 0 ? (this.loadedBytes - this.startBytes) / seconds : 0;
    const left = this.totalBytes - this.loadedBytes;
    this.emit({
      phase: this.phase,
      loadedBytes: this.loadedBytes,
      totalBytes: this.totalBytes,
      bytesPerSec,
      etaSec: bytesPerSec > 0 ? left / bytesPerSec : null,
      fromCache: this.fromCache,
    });
  }

  done() {
    this.maybe(true);
  }
}

/** The options of a download, checked, with defaults. */
function normalize(source) {
  if (!source || (typeof source.url !== 'string' && typeof source.id !== 'string')) {
    throw new EngineError('INVALID_ARGUMENT', 'give a model as {url} (to download it) or {id} (already in storage)');
  }
  const url = source.url ? new URL(source.url, self.location.href).href : null;
  const chunkBytes = source.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
    throw new EngineError('INVALID_ARGUMENT', `chunkBytes must be an integer from ${MIN_CHUNK_BYTES} to ${MAX_CHUNK_BYTES}`);
  }
  const concurrency = source.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 16) {
    throw new EngineError('INVALID_ARGUMENT', 'concurrency must be an integer from 1 to 16');
  }
  return {
    id: checkId(source.id ?? idFromUrl(url)),
    url,
    sha256: normalizeSha(source.sha256, 'sha256'),
    size: source.size == null ? null : checkedSize(source.size, 'the `size` option', 'INVALID_ARGUMENT'),
    manifestUrl: source.manifestUrl ? new URL(source.manifestUrl, self.location.href).href : null,
    chunkBytes,
    concurrency,
    retry: { ...DEFAULT_RETRY, ...(source.retry ?? {}) },
  };
}

/**
 * Makes sure model `source` is complete and verified in storage, downloading what is
 * missing. Resolves to {id, size, sha256, fromCache, fetchedBytes, retries,
 * refetchedChunks, seconds}. (Asking the browser to persist storage is the page's
 * part: navigator.storage.persist() exists only in a Window; see index.js.)
 *
 * @param source {url?, id?, sha256?, size?, manifestUrl?, chunkBytes?, concurrency?, retry?}
 * @param ctx {store (store.js), signal: AbortSignal, onProgress(event),
 *             hashReader(reader, onBytes) -> hex}
 */
export async function ensureModel(source, ctx) {
  const o = normalize(source);
  if (ctx.signal.aborted) throw aborted();
  try {
    return await navigator.locks.request(lockName(o.id), { mode: 'exclusive', signal: ctx.signal }, () =>
      ensureLocked(o, ctx),
    );
  } catch (err) {
    if (ctx.signal.aborted) throw aborted();
    throw asEngineError(err, 'STORAGE');
  }
}

async function ensureLocked(o, ctx) {
  const t0 = performance.now();
  const { store } = ctx;
  let local = await store.readManifest(o.id);
  const stats = { fetchedBytes: 0, retries: 0, refetchedChunks: 0 };
  const net = { url: o.url, signal: ctx.signal, retry: o.retry, stats };
  if (local?.complete && (!o.sha256 || local.sha256 === o.sha256) && (await sameModel(local, o, net))) {
    new Progress(ctx.onProgress, 'download', local.size, local.size, true).done();
    return { id: o.id, size: local.size, sha256: local.sha256, fromCache: true, fetchedBytes: 0, retries: 0, refetchedChunks: 0, seconds: 0 };
  }
  if (!o.url) {
    const have = local ? ` (${mib(storedBytes(local))} of ${mib(local.size)} stored)` : '';
    throw new EngineError('NOT_FOUND', `model "${o.id}" is not complete in browser storage${have}: load it from its URL`);
  }

  const remote = o.manifestUrl ? await fetchModelManifest(o.manifestUrl, net) : null;
  const expectedSha = o.sha256 ?? remote?.sha256 ?? null;
  const probe = await probeServer(net);
  const size = probe.size ?? remote?.size ?? o.size;
  if (size == null) throw new EngineError('NETWORK', `${o.url} sent no length and no model manifest gives one: pass {size}`);
  // Before any array is sized by it: what fits the quota (the stored part aside).
  const kept = local && local.size === size ? storedBytes(local) : 0;
  await checkQuota(size - kept, size);
  for (const [what, expected] of [['the caller', o.size], ['the model manifest', remote?.size]]) {
    if (expected != null && expected !== size) {
      throw new EngineError('INTEGRITY', `${o.url} is ${size} bytes but ${what} expects ${expected}: check the URL`);
    }
  }
  const chunkBytes = remote?.chunkBytes ?? o.chunkBytes;
  const nChunks = Math.max(1, Math.ceil(size / chunkBytes));
  const expectedChunks = remote?.chunks ?? null;
  if (expectedChunks && expectedChunks.length !== nChunks) {
    throw new EngineError('INTEGRITY', `the model manifest lists ${expectedChunks.length} chunks; ${size} bytes in chunks of ${chunkBytes} make ${nChunks}`);
  }

  const same = local && local.size === size && local.chunkBytes === chunkBytes && local.chunks.length === nChunks &&
    (!local.etag || !probe.etag || local.etag === probe.etag) &&
    (!local.lastModified || !probe.lastModified || local.lastModified === probe.lastModified);
  const fresh = !same;
  if (fresh) {
    local = {
      format: MANIFEST_FORMAT, id: o.id, url: o.url, size, chunkBytes, etag: probe.etag, lastModified: probe.lastModified,
      expectedSha256: expectedSha, chunks: new Array(nChunks).fill(null), complete: false, sha256: null,
    };
  }

  // Refuse before writing anything when the quota cannot hold the rest of the file.
  const existing = fresh ? 0 : Math.min(await store.storedFileBytes(o.id), size);
  await checkQuota(size - existing, size);

  const writer = await store.openWriter(o.id, { fresh });
  try {
    await store.writeManifest(o.id, local);
    const file = new ChunkedFile({ writer, store, local, expectedChunks, stats });
    const progress = new Progress(ctx.onProgress, 'download', size, storedBytes(local));
    const fetcher = { ...net, size, progress };
    if (probe.ranges) {
      await pool(file.missing(), o.concurrency, (i) => file.fetchChunk(i, fetcher));
    } else {
      await streamWhole(file, fetcher);
    }
    progress.done();

    let sha = await hashFile(writer, size, ctx);
    if (expectedSha && sha !== expectedSha && probe.ranges && !expectedChunks) {
      // Which chunk is bad is unknown: fetch each once more, rewrite those that differ.
      for (let i = 0; i < nChunks; i++) await file.fetchChunk(i, { ...fetcher, progress: new Progress(() => {}, 'download', size, 0) }, { recheck: true });
      sha = await hashFile(writer, size, ctx);
    }
    if (expectedSha && sha !== expectedSha) {
      local.chunks.fill(null);
      await writer.truncate();
      await store.writeManifest(o.id, local);
      throw new EngineError('INTEGRITY', `the file at ${o.url} has SHA-256 ${sha}, not the expected ${expectedSha} (checked twice): check the URL and the expected hash`);
    }
    Object.assign(local, { complete: true, sha256: sha, verified: Boolean(expectedSha) });
    await store.writeManifest(o.id, local);
    return { id: o.id, size, sha256: sha, fromCache: false, ...stats, seconds: (performance.now() - t0) / 1000 };
  } catch (err) {
    if (ctx.signal.aborted) throw aborted();
    throw asEngineError(err, 'STORAGE');
  } finally {
    writer.close();
  }
}

/**
 * Refuses, with QUOTA_EXCEEDED and what to do, when `need` more bytes (of a `size`-byte
 * model) cannot fit what navigator.storage.estimate() says this site may still use.
 * Without estimate() it passes: the write-time check (QuotaExceededError) remains.
 */
export async function checkQuota(need, size) {
  const est = await navigator.storage?.estimate?.().catch(() => null);
  if (!est || est.quota == null || est.usage == null) return;
  const free = est.quota - est.usage;
  if (need > free) {
    throw new EngineError(
      'QUOTA_EXCEEDED',
      `the model needs ${mib(need)} more browser storage (${mib(size)} in all) but this site may use only ${mib(Math.max(0, free))} more ` +
        `(quota ${mib(est.quota)}, used ${mib(est.usage)}): delete cached models (deleteModel), free disk space, or use a smaller model`,
    );
  }
}

/**
 * Runs `fn` over `items`, at most `n` at a time; the first failure stops new work and
 * is thrown once the running ones end. A full quota wins over any other failure: the
 * other writers' errors (a manifest that cannot be rewritten) follow from it.
 */
async function pool(items, n, fn) {
  let next = 0;
  let failed = null;
  const worker = async () => {
    while (next < items.length && !failed) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (err) {
        if (!failed || (err?.code === 'QUOTA_EXCEEDED' && failed.code !== 'QUOTA_EXCEEDED')) failed = err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failed) throw failed;
}

/** One request with retries: `attempt(net)` throws Retryable (or a network TypeError) to retry. */
async function withRetries(net, what, attempt) {
  let failures = 0;
  for (;;) {
    const progressBefore = net.madeProgress?.() ?? 0;
    try {
      return await attempt();
    } catch (err) {
      if (net.signal.aborted) throw aborted();
      if (err instanceof EngineError) throw err;
      if ((net.madeProgress?.() ?? 0) > progressBefore) failures = 0;
      failures += 1;
      net.stats.retries += 1;
      if (failures > net.retry.attempts) {
        throw new EngineError(
          'NETWORK',
          `${what} failed ${failures} times in a row (last: ${err?.message ?? err}); check the connection and load again: completed chunks are kept and the download resumes`,
          { cause: err },
        );
      }
      await sleep(backoffMs(failures, net.retry.baseDelayMs), net.signal);
    }
  }
}

/** Throws for an answer that is not `okStatus`: Retryable for transient statuses. */
function checkStatus(res, okStatus, url) {
  if (res.status === okStatus) return;
  res.body?.cancel().catch(() => {});
  if (RETRYABLE_STATUS.has(res.status)) throw new Retryable(`HTTP ${res.status}`);
  throw new EngineError('NETWORK', `${url} answered HTTP ${res.status}${res.status === 404 ? ' (not found): check the URL' : ''}`);
}

/** Manifests are a few KB (a SHA-256 per chunk); more is not one. */
const MAX_MANIFEST_BYTES = 8 << 20;

async function fetchModelManifest(url, net) {
  return withRetries(net, `fetching the model manifest ${url}`, async () => {
    const res = await fetch(url, { signal: net.signal, cache: 'no-store' });
    checkStatus(res, 200, url);
    const text = await res.text();
    if (text.length > MAX_MANIFEST_BYTES) {
      throw new EngineError('INVALID_ARGUMENT', `the model manifest ${url} is ${text.length} characters, more than a manifest holds`);
    }
    let m;
    try {
      m = JSON.parse(text);
    } catch (err) {
      throw new EngineError('INVALID_ARGUMENT', `the model manifest ${url} is not JSON: ${err.message}`);
    }
    return validateManifest(m, url);
  });
}

/**
 * Whether the complete stored copy `local` is the model `o` asks for: by its SHA-256
 * when `o` gives one (checked by the caller), by `{id}` alone, or by the same URL; a
 * different URL under the same name must answer with the stored size and validators
 * (ETag, Last-Modified), else it is another file and is downloaded again.
 */
async function sameModel(local, o, net) {
  if (o.sha256 || !o.url || local.url === o.url) return true;
  const probe = await probeServer(net);
  const validators = (probe.etag || probe.lastModified) && probe.etag === local.etag && probe.lastModified === local.lastModified;
  return probe.size === local.size && Boolean(validators);
}

/** Size, Range support and validators of the file, from a one-byte Range request. */
async function probeServer(net) {
  return withRetries(net, `reaching ${net.url}`, async () => {
    const res = await fetch(net.url, { headers: { Range: 'bytes=0-0' }, signal: net.signal, cache: 'no-store' });
    const validators = { etag: res.headers.get('ETag'), lastModified: res.headers.get('Last-Modified') };
    if (res.status === 200) {
      // Range ignored: the body is the whole file; stop it, it is fetched later.
      res.body?.cancel().catch(() => {});
      const len = res.headers.get('Content-Length');
      return { ranges: false, size: len == null ? null : checkedSize(Number(len), `${net.url}'s Content-Length`), ...validators };
    }
    checkStatus(res, 206, net.url);
    await res.arrayBuffer();
    const cr = parseContentRange(res.headers.get('Content-Range'));
    const total = cr?.total == null ? null : checkedSize(cr.total, `${net.url}'s Content-Range`);
    return { ranges: true, size: total, ...validators };
  });
}

/** Reads `body` into `buf` from `at`, calling `onBytes(n)` as each piece lands (a
 *  connection cut mid-body keeps what arrived). */
async function readInto(body, buf, at, onBytes) {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (at + value.length > buf.length) {
        throw new EngineError('NETWORK', 'the server sent more bytes than the range asked for: the file changed on the server; load again');
      }
      buf.set(value, at);
      at += value.length;
      onBytes(value.length);
    }
  } finally {
    reader.releaseLock();
  }
}

/** The model file and its manifest, chunk by chunk. */
class ChunkedFile {
  constructor({ writer, store, local, expectedChunks, stats }) {
    Object.assign(this, { writer, store, local, expectedChunks, stats });
    this.manifestWrite = Promise.resolve();
  }

  range(i) {
    const start = i * this.local.chunkBytes;
    return { start, end: Math.min(this.local.size, start + this.local.chunkBytes) };
  }

  missing() {
    return this.local.chunks.flatMap((h, i) => (h ? [] : [i]));
  }

  /**
   * Fetches chunk i (resuming inside it after a drop), checks it, writes and records it.
   * With `recheck`, a stored chunk is fetched again and rewritten only if it differs.
   */
  async fetchChunk(i, net, { recheck = false } = {}) {
    const { start, end } = this.range(i);
    const buf = new Uint8Array(end - start);
    for (let round = 0; ; round++) {
      let got = 0;
      const madeProgress = () => got;
      await withRetries({ ...net, madeProgress }, `downloading bytes ${start}-${end - 1} of ${net.url}`, async () => {
        const res = await fetch(net.url, { headers: { Range: `bytes=${start + got}-${end - 1}` }, signal: net.signal, cache: 'no-store' });
        if (res.status === 200) {
          res.body?.cancel().catch(() => {});
          throw new EngineError('NETWORK', `${net.url} stopped honouring Range requests mid-download; load again`);
        }
        checkStatus(res, 206, net.url);
        const cr = parseContentRange(res.headers.get('Content-Range'));
        if (!cr || cr.start !== start + got || cr.end !== end - 1 || (cr.total != null && cr.total !== net.size)) {
          res.body?.cancel().catch(() => {});
          throw new EngineError('NETWORK', `${net.url} answered with bytes ${res.headers.get('Content-Range')} instead of ${start + got}-${end - 1}/${net.size}: the file changed on the server; delete the model and load again`);
        }
        await readInto(res.body, buf, got, (n) => {
          got += n;
          this.stats.fetchedBytes += n;
          net.progress.add(n);
        });
        if (got < buf.length) throw new Retryable(`the connection closed after ${got} of ${buf.length} bytes`);
      });
      const hash = await sha256Hex(buf);
      if (this.expectedChunks && hash !== this.expectedChunks[i]) {
        this.stats.refetchedChunks += 1;
        net.progress.add(-buf.length);
        if (round >= 1) {
          throw new EngineError('INTEGRITY', `bytes ${start}-${end - 1} of ${net.url} do not match the model manifest twice in a row (SHA-256 ${hash}): the server's file differs from the manifest`);
        }
        continue;
      }
      if (recheck && hash === this.local.chunks[i]) return;
      if (recheck) this.stats.refetchedChunks += 1;
      await this.save(i, buf, hash);
      return;
    }
  }

  /** Writes chunk i at its offset, flushes, then records it in the manifest. */
  async save(i, buf, hash) {
    const { start } = this.range(i);
    const full = (cause) =>
      new EngineError(
        'QUOTA_EXCEEDED',
        `browser storage ran out after ${mib(storedBytes(this.local))} of ${mib(this.local.size)} (the stored chunks are kept): ` +
          'delete cached models (deleteModel), free disk space, or use a smaller model',
        { cause },
      );
    let written;
    try {
      written = await this.writer.writeAt(start, buf);
    } catch (err) {
      throw err?.name === 'QuotaExceededError' ? full(err) : asEngineError(err, 'STORAGE');
    }
    // Out of quota, browsers may return a count instead of throwing: Chromium the
    // error code as a huge unsigned number (-8, "no space"), Firefox a short write.
    if (written !== buf.length) throw full(new Error(`wrote ${written} of ${buf.length} bytes of chunk ${i}`));
    this.local.chunks[i] = hash;
    this.manifestWrite = this.manifestWrite.then(() => this.store.writeManifest(this.local.id, this.local));
    await this.manifestWrite;
  }
}

/** One streamed download for a server that ignores Range, cut into chunks as it comes. */
async function streamWhole(file, net) {
  const { size } = file.local;
  for (let round = 0; ; round++) {
    let pos = 0;
    const bad = await withRetries({ ...net, madeProgress: () => pos }, `downloading ${net.url}`, async () => {
      pos = 0;
      net.progress.set(0);
      const res = await fetch(net.url, { signal: net.signal, cache: 'no-store' });
      checkStatus(res, 200, net.url);
      const reader = res.body.getReader();
      let i = 0;
      let chunk = new Uint8Array(file.range(0).end);
      let fill = 0;
      let mismatch = false;
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          let off = 0;
          while (off < value.length) {
            if (i >= file.local.chunks.length) throw new EngineError('NETWORK', `${net.url} sent more than ${size} bytes: the file changed on the server; load again`);
            const n = Math.min(value.length - off, chunk.length - fill);
            chunk.set(value.subarray(off, off + n), fill);
            fill += n;
            off += n;
            pos += n;
            file.stats.fetchedBytes += n;
            net.progress.add(n);
            if (fill === chunk.length) {
              const hash = await sha256Hex(chunk);
              if (file.expectedChunks && hash !== file.expectedChunks[i]) mismatch = true;
              else if (file.local.chunks[i] !== hash) await file.save(i, chunk, hash);
              i += 1;
              if (i < file.local.chunks.length) {
                const r = file.range(i);
                chunk = new Uint8Array(r.end - r.start);
                fill = 0;
              }
            }
          }
        }
      } finally {
        reader.releaseLock();
      }
      if (pos < size) throw new Retryable(`the connection closed after ${pos} of ${size} bytes`);
      return mismatch;
    });
    if (!bad) return;
    file.stats.refetchedChunks += 1;
    if (round >= 1) {
      throw new EngineError('INTEGRITY', `${net.url} does not match the model manifest twice in a row: the server's file differs from the manifest`);
    }
  }
}

/** SHA-256 of the stored file (wasm), with "verify" progress. */
async function hashFile(writer, size, ctx) {
  const progress = new Progress(ctx.onProgress, 'verify', size, 0);
  const reader = await writer.reader();
  if (reader.size !== size) throw new EngineError('STORAGE', `storage holds ${reader.size} bytes of a ${size}-byte file after the download: storage is failing; delete the model and load again`);
  const sha = ctx.hashReader(reader, (n) => progress.set(n));
  progress.done();
  return sha;
}
