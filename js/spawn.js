// Waiting for a Web Worker to start, with a time limit and the cause when it does not:
// used for the engine's worker (index.js) and for the CPU thread pool's (pool.js).

import { EngineError } from './errors.js';

/**
 * Resolves when `worker` answers that it is up, rejects with an EngineError naming
 * `what` and the cause when it fails or stays silent for `timeoutMs`. `answer(msg)` reads
 * each message: `{ok: true, value}` (started), `{ok: false, message, code}` (failed) or
 * null (not about starting). The worker is terminated on failure.
 */
export function awaitStart(worker, { what, timeoutMs, answer }) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      worker.removeEventListener('message', onMessage);
      worker.removeEventListener('error', onError);
    };
    const fail = (code, message) => {
      done();
      worker.terminate();
      reject(new EngineError(code, message));
    };
    const onMessage = (e) => {
      const a = answer(e.data);
      if (!a) return;
      if (a.ok) {
        done();
        resolve(a.value);
      } else {
        fail(a.code ?? 'INTERNAL', `${what} failed to start: ${a.message}`);
      }
    };
    const onError = (e) => {
      e.preventDefault?.();
      fail('INTERNAL', `${what} failed to start: ${describeWorkerError(e)}`);
    };
    const timer = setTimeout(
      () => fail('INTERNAL', `${what} did not start within ${Math.round(timeoutMs / 1000)} s: its script or wasm may be blocked or very slow to load; see the package README's notes on bundlers and headers`),
      timeoutMs,
    );
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', onError);
  });
}

/** What a worker's `error` event says: the exception with its place when it has one; a
 *  script that never ran gives none, so then the usual causes. */
export function describeWorkerError(e) {
  if (e?.message) {
    const where = e.filename ? ` (${e.filename}${e.lineno ? `:${e.lineno}` : ''})` : '';
    return `${e.message}${where}`;
  }
  return 'its script did not load or threw before it ran: check that the server answers it (HTTP 200, served as JavaScript, with the page\'s COEP header when the page is cross-origin isolated) and that a bundler emitted it; createEngine({workerUrl}) points at it by hand';
}
