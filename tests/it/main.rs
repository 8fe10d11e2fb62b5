//! All integration tests, as one test binary: one link instead of thirteen (each link of
//! the release profile pulls in wgpu, tokenizers and candle), and one pool of test
//! threads across every module. `cargo test --test it <module>::` runs one module.

mod common;

mod bad_models;
mod cli;
mod engine;
mod f32_reference;
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
