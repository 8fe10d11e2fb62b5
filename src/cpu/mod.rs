//! The CPU backend: quantized matmul and the small ops of the forward pass, on plain
//! `f32` slices. Quantized block formats and most dot products come from candle-core;
//! Q4_1 (the default model's format, scalar-only in candle) has a kernel of our own.

pub mod activations;
pub mod matmul;
pub mod ops;
mod pass;
pub mod q4_1;

pub use matmul::Matrix;
pub use pass::{Cpu, CpuPass};
