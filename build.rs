//! Link flags of the multi-threaded wasm build (`--features threads`, built by build.sh
//! with `+atomics,+bulk-memory`): a shared, imported memory that every Web Worker of
//! the rayon pool instantiates the module with, and the thread-local-storage symbols
//! wasm-bindgen's thread support initializes in each of them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32");
    let threads = std::env::var_os("CARGO_FEATURE_THREADS").is_some();
    if wasm && threads {
        for arg in [
            "--shared-memory",
            "--import-memory",
            "--export=__wasm_init_tls",
            "--export=__tls_size",
            "--export=__tls_align",
            "--export=__tls_base",
        ] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
