// Starts the CPU thread pool of the multi-threaded build, inside the engine's worker:
// `threads` pool workers (pool-worker.js) on this module's shared memory become rayon's
// global pool (src/wasm/pool.rs says how the threads are handed over). Each worker is
// started with the literal `new Worker(new URL(...), {type: 'module'})` that bundlers
// follow, must answer within a time limit, and a failure says which and why.

import { EngineError } from './errors.js';
import { POOL_INIT, POOL_READY, POOL_FAILED } from './pool-protocol.js';
import { awaitStart } from './spawn.js';

/** How long one pool worker may take to load and instantiate the module. */
export const POOL_START_MS = 30_000;

// Kept for the life of the module: the pool threads read the hand-over channel through
// it, and the workers are rooted here (a collected worker would take its thread along).
let poolStart = null;
let poolWorkers = [];

/** Starts a pool of `threads` threads for `wasm` (the threads build's exports). */
export async function startPool(wasm, threads) {
  if (poolStart) throw new EngineError('INTERNAL', 'the thread pool is already started');
  poolStart = new wasm.PoolStart(threads);
  const init = { type: POOL_INIT, module: wasm.sharedModule(), memory: wasm.sharedMemory(), receiver: poolStart.receiver() };
  const started = await Promise.allSettled(Array.from({ length: threads }, (_, i) => startThread(i, init)));
  poolWorkers = started.filter((s) => s.status === 'fulfilled').map((s) => s.value);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    for (const w of poolWorkers) w.terminate();
    poolWorkers = [];
    throw failed.reason;
  }
  poolStart.build();
}

function startThread(index, init) {
  const worker = new Worker(new URL('./pool-worker.js', import.meta.url), { type: 'module', name: 'edge-reason-pool' });
  const ready = awaitStart(worker, {
    what: `CPU thread ${index + 1} (pool-worker.js)`,
    timeoutMs: POOL_START_MS,
    answer: (msg) => (msg?.type === POOL_READY ? { ok: true } : msg?.type === POOL_FAILED ? { ok: false, message: msg.message } : null),
  });
  worker.postMessage(init);
  return ready.then(() => worker);
}
