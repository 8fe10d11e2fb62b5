//! The CPU thread pool of the multi-threaded build (`--features threads`): rayon's
//! global pool, whose threads are Web Workers sharing this module's memory.
//!
//! The JS side (js/pool.js, in the engine's worker) starts it in three steps:
//! 1. `new PoolStart(n)` makes the channel the n threads will be handed over;
//! 2. n pool workers (js/pool-worker.js) each instantiate this module on
//!    `sharedModule()` and `sharedMemory()` and call `runPoolThread(start.receiver())`,
//!    which blocks until its rayon thread arrives, then runs it for good;
//! 3. once every worker has said it is ready, `start.build()` makes rayon's global pool,
//!    handing one thread to each of them.
//!
//! This does the job of wasm-bindgen-rayon, whose helper script fetches its own URL
//! into a `blob:` worker (no-bundler mode) or imports the package by a directory path
//! (bundler mode); neither survives both bundlers and plain static hosts, while the
//! `new Worker(new URL('./pool-worker.js', import.meta.url))` that js/pool.js writes does.

use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::{ThreadBuilder, ThreadPoolBuilder};
use wasm_bindgen::prelude::*;

use super::js::{coded_error, invalid};

/// The hand-over of rayon's threads to the pool workers. The JS side keeps it alive for
/// the life of the module: each worker reads the receiver through its address.
#[wasm_bindgen]
pub struct PoolStart {
    threads: usize,
    sender: Sender<ThreadBuilder>,
    receiver: Receiver<ThreadBuilder>,
}

#[wasm_bindgen]
impl PoolStart {
    /// A pool of `threads` (1 to 64) threads, not started yet.
    #[wasm_bindgen(constructor)]
    pub fn new(threads: usize) -> Result<PoolStart, JsValue> {
        if !(1..=64).contains(&threads) {
            return Err(invalid(&format!(
                "a thread pool of {threads} threads: use 1 to 64"
            )));
        }
        let (sender, receiver) = bounded(threads);
        Ok(PoolStart {
            threads,
            sender,
            receiver,
        })
    }

    /// The address of the channel's receiving end, for `runPoolThread` in each worker.
    pub fn receiver(&self) -> usize {
        &self.receiver as *const Receiver<ThreadBuilder> as usize
    }

    /// Makes rayon's global pool: call once every pool worker waits in `runPoolThread`.
    pub fn build(&self) -> Result<(), JsValue> {
        ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .spawn_handler(|thread| {
                // The channel holds `threads` builders, so this never blocks.
                self.sender
                    .send(thread)
                    .map_err(|_| std::io::Error::other("the pool's channel is closed"))
            })
            .build_global()
            .map_err(|e| coded_error("INTERNAL", &format!("starting the thread pool: {e}")))
    }
}

/// This module's compiled `WebAssembly.Module`, for the pool workers to instantiate.
#[wasm_bindgen(js_name = sharedModule)]
pub fn wasm_module() -> JsValue {
    wasm_bindgen::module()
}

/// This module's shared `WebAssembly.Memory`, for the pool workers to instantiate on.
#[wasm_bindgen(js_name = sharedMemory)]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// Runs one pool thread in the calling worker: waits for the thread `PoolStart::build`
/// hands over, then runs rayon's work loop until the module is gone (never returns
/// while the pool lives).
#[wasm_bindgen(js_name = runPoolThread)]
pub fn run_pool_thread(receiver: usize) {
    // SAFETY: `receiver` is `PoolStart::receiver()` of a PoolStart that the engine's
    // worker keeps alive for the life of the module (js/pool.js holds it in a module
    // variable and never frees it), in the memory this worker shares; `Receiver` is Sync.
    let receiver = unsafe { &*(receiver as *const Receiver<ThreadBuilder>) };
    if let Ok(thread) = receiver.recv() {
        thread.run();
    }
}
