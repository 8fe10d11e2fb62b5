// The messages between the engine's worker (pool.js) and its pool threads (pool-worker.js).

export const POOL_INIT = 'edge-reason-pool-init';
export const POOL_READY = 'edge-reason-pool-ready';
export const POOL_FAILED = 'edge-reason-pool-failed';
