// The engine's worker on the single-threaded wasm build (see engine-worker.js). index.js
// starts it with `new Worker(new URL('./worker.js', import.meta.url), {type: 'module'})`,
// a form Vite and webpack recognize, and the static import below brings the wasm along.

import init, * as wasm from './edge_reason.js';
import { serve } from './engine-worker.js';

serve(async ({ wasmUrl }) => {
  await init({ module_or_path: wasmUrl ?? undefined });
  return { wasm, threads: 1 };
});
