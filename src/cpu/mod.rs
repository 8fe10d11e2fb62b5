//! The CPU backend: quantized matmul and the small ops of the forward pass, on plain
//! `f32` slices. Quantized block formats and most dot products come from candle-core;
//! the default model's two formats have kernels of our own (AVX2, wasm SIMD128 and
//! scalar) that take several activation rows at once: Q4_1 (scalar-only in candle) and
//! Q8_0 (its output head).

/// The public face of a block kernel module (q4_1, q8_0): `dot` and `dot4` over one
/// `dot_rows` that picks, at compile time, the module's `dot_rows_avx2` (x86-64 with
/// AVX2 and FMA), `dot_rows_simd128` (wasm SIMD128) or `dot_scalar`.
macro_rules! dot_kernels {
    ($w:ty, $a:ty) => {
        /// `sum_j w[j] * x[j]` over matching blocks.
        #[inline]
        pub fn dot(w: &[$w], x: &[$a]) -> f32 {
            debug_assert_eq!(w.len(), x.len());
            dot_rows(w, [x])[0]
        }

        /// [`dot`] of one weight row with [`ROWS`](super::ROWS) activation rows, unpacking
        /// each weight block once. Both are the same kernel, so each result is
        /// bit-identical to `dot(w, x[r])` and batched and one-at-a-time evaluation agree
        /// exactly.
        #[inline]
        pub fn dot4(w: &[$w], x: [&[$a]; super::ROWS]) -> [f32; super::ROWS] {
            dot_rows(w, x)
        }

        /// One weight row against `R` activation rows.
        #[inline]
        fn dot_rows<const R: usize>(w: &[$w], x: [&[$a]; R]) -> [f32; R] {
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            ))]
            {
                // SAFETY: the target features this function needs are enabled at compile time.
                unsafe { dot_rows_avx2(w, x) }
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            {
                dot_rows_simd128(w, x)
            }
            #[cfg(not(any(
                all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma"
                ),
                all(target_arch = "wasm32", target_feature = "simd128")
            )))]
            {
                x.map(|xr| dot_scalar(w, xr))
            }
        }
    };
}

pub mod activations;
pub mod matmul;
pub mod ops;
mod pass;
pub mod q4_1;
pub mod q8_0;
pub mod wide;

/// Activation rows the kernels' `dot4` takes at once (batched candidates).
pub const ROWS: usize = 4;

pub use matmul::Matrix;
pub use pass::{Cpu, CpuPass};
