//! edge-reason: run a small INT4 language model on-device and make it reason efficiently.
//!
//! What it does today: reads GGUF models (llama and qwen2 architectures, F32/F16/BF16,
//! Q4_0/Q4_1/Q5_x/Q8_0 and K-quant weights), tokenizes with the model's own vocabulary,
//! renders its chat template, and runs one transformer on the CPU (checked against
//! llama.cpp) or on a GPU through wgpu with our own WGSL kernels (checked against the
//! CPU), with the KV cache kept outside the model.
//!
//! What it does not do (yet): sampling on the GPU beyond argmax, browser storage, LoRA
//! adapters, the switcher, parallel candidates and the vote (see the issues).
//!
//! Modules:
//! - [`gguf`]: the file format (metadata, tensor directory with byte ranges).
//! - [`tokenizer`]: GGUF vocab/merges to a `tokenizers::Tokenizer`; chat templates.
//! - [`model`]: config, weights and the one transformer.
//! - [`cpu`]: quantized matmul and the small ops, on slices.
//! - [`gpu`]: the wgpu backend: WGSL kernels, device weights, sessions.
//! - [`kv_cache`]: per-sequence keys and values, outside the model.
//! - [`lora`]: LoRA adapters (PEFT and our INT8 form), checked against the model.
//! - [`sampler`]: greedy, temperature, top-k, top-p, repetition penalty.
//! - [`engine`]: tokenizer + model + sampler: prompt in, tokens out.
//! - [`reason`]: answer extraction, the vote, budget forcing.
//! - [`runner`]: a model on the backend chosen at load time (CPU or GPU), one API.
//! - [`bench`]: prefill/decode/stream-step speed, shared by the CLI and the browser.

pub mod bench;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod gpu;
pub mod kv_cache;
pub mod lora;
pub mod model;
pub mod reason;
pub mod runner;
pub mod sampler;
pub mod tokenizer;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use error::{Error, Result};

/// The crate version, as shown by the CLI and the demo page.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
