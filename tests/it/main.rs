//! All integration tests, as one test binary: one link instead of thirteen (each link of
//! the release profile pulls in wgpu, tokenizers and candle), and one pool of test
//! threads across every module. `cargo test --test it <module>::` runs one module.

mod common;

/// The test binary's allocator: the system's, noting the largest single allocation each
/// thread asks for, so that the fuzzers can bound what a hostile input makes the
/// parsers allocate (an over-allocation is no panic, and would pass unseen).
pub mod alloc_watch {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Watch;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(bytes: usize) {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(bytes)));
    }

    unsafe impl GlobalAlloc for Watch {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Runs `f` and returns its result with the largest single allocation this thread
    /// asked for while it ran.
    pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|c| c.set(0));
        let r = f();
        (r, LARGEST.with(Cell::get))
    }
}

#[global_allocator]
static ALLOCATOR: alloc_watch::Watch = alloc_watch::Watch;

mod bad_models;
mod cli;
mod engine;
mod f32_reference;
mod fuzz;
mod gpu;
mod gpu_reason;
mod lora;
mod lora_peft;
mod parity;
mod reason;
mod switcher;
mod tokenizer_variants;
mod train_data;
mod untrusted;
