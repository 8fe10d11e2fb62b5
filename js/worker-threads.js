// The engine's worker on the multi-threaded wasm build (threads/: shared memory, a rayon
// pool of `threads` Web Workers started by pool.js). index.js starts it only where the
// page is cross-origin isolated, and falls back to worker.js if it fails to start.

import init, * as wasm from './threads/edge_reason.js';
import { serve } from './engine-worker.js';
import { startPool } from './pool.js';

serve(async ({ wasmUrl, threads }) => {
  await init({ module_or_path: wasmUrl ?? undefined });
  await startPool(wasm, threads);
  return { wasm, threads: wasm.cpuThreads() };
});
