//! The CPU backend: quantized matmul and the small ops of the forward pass, on plain
//! `f32` slices. Quantized block formats and most dot products come from candle-core;
//! the formats that carry most of the default model's weights in the files people
//! download have kernels of our own (AVX2, wasm SIMD128 and scalar) that take several
//! activation rows at once: Q4_1 (scalar-only in candle), Q8_0 (its output head), Q5_0
//! and Q5_1 (scalar-only in candle; most of its tensors in Q4_K_M and Q5_K_M files), and
//! the K-quants Q4_K, Q5_K and Q6_K (candle's take one row at a time) with their Q8_K
//! activations.

/// The public face of a block kernel module (q4_1, q8_0): `dot` and `dot4` over one
/// `dot_rows` that picks, at compile time, the module's `dot_rows_x86` (x86-64 with
/// AVX2 and FMA), `dot_rows_simd128` (wasm SIMD128) or `dot_scalar`.
macro_rules! dot_kernels {
    ($w:ty, $a:ty) => {
        /// `sum_j w[j] * x[j]` over matching blocks. Inlined into the matmul loop
        /// natively; in wasm a call, which V8 compiles to faster code (measured: one
        /// thread decodes 10% faster).
        #[cfg_attr(not(target_arch = "wasm32"), inline)]
        #[cfg_attr(target_arch = "wasm32", inline(never))]
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

        /// [`dot4`] for [`PREFILL_ROWS`](super::PREFILL_ROWS) rows: prefill unpacks each
        /// weight block once for eight tokens (measured: 16-24% faster prefill than
        /// four on the default model's Q4_K_M and Q8_0 files).
        #[inline]
        pub fn dot8(w: &[$w], x: [&[$a]; super::PREFILL_ROWS]) -> [f32; super::PREFILL_ROWS] {
            dot_rows(w, x)
        }

        /// The multi-row kernels, for the matmul loop.
        pub const ROW_KERNELS: super::RowKernels<$w, $a> = super::RowKernels {
            four: dot4,
            eight: dot8,
        };

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
                unsafe { dot_rows_x86(w, x) }
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

/// A kernel module's activation format: `Act` is what its kernels read for one block
/// of activations: `$wide` (the quants widened to `i16`, see [`wide`]) on wasm SIMD128,
/// `$scaled` (ggml's block with f32 scales, see [`scaled`]) with AVX2, else ggml's
/// `$block` itself. `quantize` fills it with ggml's `$quantize` rounding.
macro_rules! activation_format {
    ($block:ty, $wide:ty, $scaled:ty, $quantize:ident) => {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        pub type Act = $wide;
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        pub type Act = $scaled;
        #[cfg(not(any(
            all(target_arch = "wasm32", target_feature = "simd128"),
            all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            )
        )))]
        pub type Act = $block;

        /// ggml's block as [`Act`].
        #[inline]
        pub fn to_act(b: &$block) -> Act {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            {
                <$wide>::new(b)
            }
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            ))]
            {
                <$scaled>::new(b)
            }
            #[cfg(not(any(
                all(target_arch = "wasm32", target_feature = "simd128"),
                all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma"
                )
            )))]
            {
                *b
            }
        }

        /// Quantizes `x` (a multiple of 32 values) into [`Act`] blocks with ggml's
        /// rounding.
        pub fn quantize(x: &[f32], out: &mut [Act]) {
            super::activations::quantize_converted(x, out, <$block>::ZERO, $quantize, to_act)
        }
    };
}

pub mod activations;
pub mod matmul;
pub mod ops;
mod pass;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;
pub mod scaled;
pub mod wide;
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod x86;

/// Activation rows the kernels' `dot4` takes at once (batched candidates).
pub const ROWS: usize = 4;

/// Activation rows the kernels' `dot8` takes at once (prefill).
pub const PREFILL_ROWS: usize = 8;

/// A kernel module's multi-row dots: one weight row against [`ROWS`] or
/// [`PREFILL_ROWS`] activation rows, each result bit-identical to a one-row `dot`.
pub struct RowKernels<W, A> {
    pub four: fn(&[W], [&[A]; ROWS]) -> [f32; ROWS],
    pub eight: fn(&[W], [&[A]; PREFILL_ROWS]) -> [f32; PREFILL_ROWS],
}

/// Work (in block dots: 32 multiply-adds) below which a loop runs on the calling thread
/// instead of forking over the thread pool, from outside the pool and from one of its
/// threads. In the browser a job sent into the pool from outside wakes Web Workers
/// through `Atomics.wait`/`notify` and sleeps until done: about 80 us (measured: 2
/// threads decoded at half the speed of 1 when every matmul did it), more than a
/// 576 x 576 matvec takes on one thread. From a pool thread (where the CPU passes run,
/// see `Model::run_cpu`) the forking thread starts on its share at once. Natively a
/// fork-join costs a few microseconds: always fork there.
#[cfg(target_arch = "wasm32")]
const PARALLEL_MIN_WORK: [usize; 2] = [64 * 1024, 8 * 1024];
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_WORK: [usize; 2] = [1, 1];

/// `f(i, chunk)` for each `chunk_len`-sized chunk of `out`: across rayon's pool (chunks
/// of at least `min_len` per task) when `work` block dots are worth a fork-join and the
/// pool has more than one thread, else in order on this thread.
pub(crate) fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    min_len: usize,
    work: usize,
    f: impl Fn((usize, &mut [T])) + Sync + Send,
) {
    use rayon::prelude::*;
    let in_pool = rayon::current_thread_index().is_some();
    if work >= PARALLEL_MIN_WORK[in_pool as usize] && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .with_min_len(min_len)
            .for_each(f);
    } else {
        out.chunks_mut(chunk_len).enumerate().for_each(f);
    }
}

pub use matmul::Matrix;
pub use pass::{Cpu, CpuPass};
