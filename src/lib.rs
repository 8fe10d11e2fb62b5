//! edge-reason: run a small INT4 language model on-device and make it reason efficiently.
//! (crate docs are filled in as modules land)

#[cfg(target_arch = "wasm32")]
mod wasm;

/// The crate version, as shown by the CLI and the demo page.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
