//! The CPU backend: quantized matmul and the small ops of the forward pass, on plain
//! `f32` slices. Quantized block formats and most dot products come from candle-core;
//! the default model's two formats have kernels of our own (AVX2, wasm SIMD128 and
//! scalar) that take several activation rows at once: Q4_1 (scalar-only in candle) and
//! Q8_0 (its output head).

pub mod activations;
pub mod matmul;
pub mod ops;
mod pass;
pub mod q4_1;
pub mod q8_0;

/// Activation rows the kernels' `dot4` takes at once (batched candidates).
pub const ROWS: usize = 4;

pub use matmul::Matrix;
pub use pass::{Cpu, CpuPass};
