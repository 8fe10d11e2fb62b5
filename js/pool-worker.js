// One thread of the CPU thread pool (see pool.js and src/wasm/pool.rs): instantiates the
// multi-threaded wasm build on the engine worker's module and shared memory, says it is
// ready, then runs its rayon thread until the engine's worker goes away.

import init, { runPoolThread } from './threads/edge_reason.js';
import { POOL_INIT, POOL_READY, POOL_FAILED } from './pool-protocol.js';

self.addEventListener('message', async function onInit({ data }) {
  if (data?.type !== POOL_INIT) return;
  self.removeEventListener('message', onInit);
  try {
    await init({ module_or_path: data.module, memory: data.memory });
  } catch (err) {
    self.postMessage({ type: POOL_FAILED, message: String(err?.message ?? err) });
    return;
  }
  self.postMessage({ type: POOL_READY });
  runPoolThread(data.receiver);
});
