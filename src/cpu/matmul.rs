//! A weight matrix in any supported storage type, and `y = x W^T` on it.
//!
//! Activations are quantized to the weight type's companion format (Q8_0, Q8_1, Q8_K,
//! f16...) once per row, then every output column is one dot product, exactly as ggml
//! computes it: this is what keeps our logits within rounding of llama.cpp's.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, GgmlType,
};
use half::{bf16, f16};

use super::activations;
use super::q4_1::BlockQ4_1;
use super::{
    for_each_chunk, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_k, RowKernels, PREFILL_ROWS, ROWS,
};
use crate::error::{Error, Result};
use crate::gguf::TensorType;

/// Output columns computed by one parallel task (one or a few activation rows).
const COLUMNS_PER_TASK: usize = 64;

/// Activation rows of one parallel task when there are more (a prefill chunk): their
/// quantized blocks, 16 x 0.6-1.7 KiB for the default model, stay in L1.
const ROWS_PER_TASK: usize = 16;

/// The blocks of a matrix, in its storage type.
pub enum Blocks {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q5_0(Vec<BlockQ5_0>),
    Q5_1(Vec<BlockQ5_1>),
    Q8_0(Vec<BlockQ8_0>),
    Q2K(Vec<BlockQ2K>),
    Q3K(Vec<BlockQ3K>),
    Q4K(Vec<BlockQ4K>),
    Q5K(Vec<BlockQ5K>),
    Q6K(Vec<BlockQ6K>),
}

/// A row-major matrix of `rows` x `cols` (for a linear layer: out_features x in_features).
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub ttype: TensorType,
    pub blocks: Blocks,
}

/// Runs `$e` with `$b` bound to the block vector of whichever storage type `$blocks` is.
macro_rules! each_blocks {
    ($blocks:expr, $b:ident => $e:expr) => {
        match $blocks {
            Blocks::F32($b) => $e,
            Blocks::F16($b) => $e,
            Blocks::BF16($b) => $e,
            Blocks::Q4_0($b) => $e,
            Blocks::Q4_1($b) => $e,
            Blocks::Q5_0($b) => $e,
            Blocks::Q5_1($b) => $e,
            Blocks::Q8_0($b) => $e,
            Blocks::Q2K($b) => $e,
            Blocks::Q3K($b) => $e,
            Blocks::Q4K($b) => $e,
            Blocks::Q5K($b) => $e,
            Blocks::Q6K($b) => $e,
        }
    };
}

// SAFETY (both): every block type is repr(C) plain data (floats, f16 and byte arrays)
// without padding, whose every bit pattern is valid, so its memory is exactly its
// GGUF bytes.
fn bytes_of<T>(b: &[T]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u8, std::mem::size_of_val(b)) }
}

fn bytes_of_mut<T>(b: &mut [T]) -> &mut [u8] {
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u8, std::mem::size_of_val(b)) }
}

impl Matrix {
    /// A matrix of zero blocks, to be filled through [`Matrix::raw_bytes_mut`] (a tensor
    /// is read straight into it, with no second copy).
    pub fn zeroed(ttype: TensorType, rows: usize, cols: usize) -> Result<Self> {
        if cols as u64 % ttype.block_len() != 0 {
            return Err(Error::Corrupt(format!(
                "a {ttype} matrix needs a multiple of {} columns, got {cols}",
                ttype.block_len()
            )));
        }
        let n = rows * cols / ttype.block_len() as usize;
        let blocks = match ttype {
            TensorType::F32 => Blocks::F32(vec![0f32; n]),
            TensorType::F16 => Blocks::F16(vec![f16::ZERO; n]),
            TensorType::BF16 => Blocks::BF16(vec![bf16::ZERO; n]),
            TensorType::Q4_0 => Blocks::Q4_0(vec![BlockQ4_0::zeros(); n]),
            TensorType::Q4_1 => Blocks::Q4_1(vec![
                BlockQ4_1 {
                    d: f16::ZERO,
                    m: f16::ZERO,
                    qs: [0; 16],
                };
                n
            ]),
            TensorType::Q5_0 => Blocks::Q5_0(vec![BlockQ5_0::zeros(); n]),
            TensorType::Q5_1 => Blocks::Q5_1(vec![BlockQ5_1::zeros(); n]),
            TensorType::Q8_0 => Blocks::Q8_0(vec![BlockQ8_0::zeros(); n]),
            TensorType::Q2K => Blocks::Q2K(vec![BlockQ2K::zeros(); n]),
            TensorType::Q3K => Blocks::Q3K(vec![BlockQ3K::zeros(); n]),
            TensorType::Q4K => Blocks::Q4K(vec![BlockQ4K::zeros(); n]),
            TensorType::Q5K => Blocks::Q5K(vec![BlockQ5K::zeros(); n]),
            TensorType::Q6K => Blocks::Q6K(vec![BlockQ6K::zeros(); n]),
            TensorType::Q8_1 | TensorType::Q8K => {
                return Err(Error::UnsupportedConfig(format!(
                    "{ttype} is an activation format, not a weight format"
                )))
            }
        };
        Ok(Matrix {
            rows,
            cols,
            ttype,
            blocks,
        })
    }

    /// Builds a matrix from a tensor's raw bytes (`rows * cols` elements of `ttype`).
    pub fn from_bytes(ttype: TensorType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let mut m = Self::zeroed(ttype, rows, cols)?;
        let dst = m.raw_bytes_mut();
        if bytes.len() != dst.len() {
            return Err(Error::Corrupt(format!(
                "a {ttype} matrix of {rows}x{cols} needs {} bytes, got {}",
                dst.len(),
                bytes.len()
            )));
        }
        dst.copy_from_slice(bytes);
        Ok(m)
    }

    /// The weights in their GGUF byte layout (ggml's blocks, little-endian).
    pub fn raw_bytes(&self) -> &[u8] {
        each_blocks!(&self.blocks, b => bytes_of(b))
    }

    /// The weights' bytes, writable (see [`Matrix::zeroed`]).
    pub fn raw_bytes_mut(&mut self) -> &mut [u8] {
        each_blocks!(&mut self.blocks, b => bytes_of_mut(b))
    }

    /// Bytes the weights occupy.
    pub fn n_bytes(&self) -> usize {
        (self.rows * self.cols) / self.ttype.block_len() as usize
            * self.ttype.block_bytes() as usize
    }

    /// Dequantizes row `row` into `out` (`cols` values): the embedding lookup.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        fn rows<T: GgmlType>(b: &[T], row: usize, cols: usize, out: &mut [f32]) {
            let per_row = cols / T::BLCK_SIZE;
            T::to_float(&b[row * per_row..(row + 1) * per_row], out);
        }
        let c = self.cols;
        match &self.blocks {
            Blocks::F32(b) => out.copy_from_slice(&b[row * c..(row + 1) * c]),
            Blocks::F16(b) => rows(b, row, c, out),
            Blocks::BF16(b) => rows(b, row, c, out),
            Blocks::Q4_0(b) => rows(b, row, c, out),
            Blocks::Q4_1(b) => {
                let per_row = c / q4_1::BLOCK;
                q4_1::dequantize(&b[row * per_row..(row + 1) * per_row], out)
            }
            Blocks::Q5_0(b) => rows(b, row, c, out),
            Blocks::Q5_1(b) => rows(b, row, c, out),
            Blocks::Q8_0(b) => rows(b, row, c, out),
            Blocks::Q2K(b) => rows(b, row, c, out),
            Blocks::Q3K(b) => rows(b, row, c, out),
            Blocks::Q4K(b) => rows(b, row, c, out),
            Blocks::Q5K(b) => rows(b, row, c, out),
            Blocks::Q6K(b) => rows(b, row, c, out),
        }
    }

    /// `y = x W^T`: `x` is (m, cols), `y` is (m, rows), both row-major.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.cols);
        debug_assert_eq!(y.len(), m * self.rows);
        match &self.blocks {
            Blocks::F32(b) => candle_matmul(b, x, m, self.cols, y, GgmlType::from_float),
            Blocks::F16(b) => candle_matmul(b, x, m, self.cols, y, GgmlType::from_float),
            // candle 0.9's AVX bf16 dot product returns wrong sums (see the test below),
            // so BF16 uses a plain dot over bf16-rounded activations, as ggml does.
            Blocks::BF16(b) => blocked_matmul(
                b,
                x,
                m,
                self.cols,
                y,
                1,
                bf16::ZERO,
                |x: &[f32], q: &mut [bf16]| {
                    q.iter_mut()
                        .zip(x)
                        .for_each(|(q, &v)| *q = bf16::from_f32(v))
                },
                |wr: &[bf16], xr: &[bf16]| {
                    wr.iter()
                        .zip(xr)
                        .map(|(a, b)| a.to_f32() * b.to_f32())
                        .sum()
                },
                None,
            ),
            Blocks::Q4_0(b) => candle_matmul(b, x, m, self.cols, y, quantize_q8_0),
            Blocks::Q4_1(b) => blocked_matmul(
                b,
                x,
                m,
                self.cols,
                y,
                q4_1::BLOCK,
                q4_1::Act::ZERO,
                q4_1::quantize,
                q4_1::dot,
                Some(&q4_1::ROW_KERNELS),
            ),
            Blocks::Q5_0(b) => blocked_matmul(
                view::<_, q5_0::BlockQ5_0>(b),
                x,
                m,
                self.cols,
                y,
                q5_0::BLOCK,
                q8_0::Act::ZERO,
                q5_0::quantize,
                q5_0::dot,
                Some(&q5_0::ROW_KERNELS),
            ),
            Blocks::Q5_1(b) => blocked_matmul(
                view::<_, q5_1::BlockQ5_1>(b),
                x,
                m,
                self.cols,
                y,
                q5_1::BLOCK,
                q4_1::Act::ZERO,
                q5_1::quantize,
                q5_1::dot,
                Some(&q5_1::ROW_KERNELS),
            ),
            Blocks::Q8_0(b) => blocked_matmul(
                q8_0_blocks(b),
                x,
                m,
                self.cols,
                y,
                q8_0::BLOCK,
                q8_0::Act::ZERO,
                q8_0::quantize,
                q8_0::dot,
                Some(&q8_0::ROW_KERNELS),
            ),
            Blocks::Q2K(b) => candle_matmul(b, x, m, self.cols, y, quantize_q8_k),
            Blocks::Q3K(b) => candle_matmul(b, x, m, self.cols, y, quantize_q8_k),
            Blocks::Q4K(b) => blocked_matmul(
                view::<_, q4_k::BlockQ4K>(b),
                x,
                m,
                self.cols,
                y,
                q8_k::BLOCK_K,
                q8_k::ZERO,
                q8_k::quantize,
                q4_k::dot,
                Some(&q4_k::ROW_KERNELS),
            ),
            Blocks::Q5K(b) => blocked_matmul(
                view::<_, q5_k::BlockQ5K>(b),
                x,
                m,
                self.cols,
                y,
                q8_k::BLOCK_K,
                q8_k::ZERO,
                q8_k::quantize,
                q5_k::dot,
                Some(&q5_k::ROW_KERNELS),
            ),
            Blocks::Q6K(b) => blocked_matmul(
                view::<_, q6_k::BlockQ6K>(b),
                x,
                m,
                self.cols,
                y,
                q8_k::BLOCK_K,
                q8_k::ZERO,
                q8_k::quantize,
                q6_k::dot,
                Some(&q6_k::ROW_KERNELS),
            ),
        }
    }
}

/// Matmul for any candle block type with candle's (SIMD where it has them) dot
/// products; activations are quantized by `quantize` (ggml-exact for Q8_0 and Q8_K,
/// whose candle quantizers round differently from ggml).
fn candle_matmul<T: GgmlType>(
    w: &[T],
    x: &[f32],
    m: usize,
    k: usize,
    y: &mut [f32],
    quantize: fn(&[f32], &mut [T::VecDotType]),
) {
    blocked_matmul(
        w,
        x,
        m,
        k,
        y,
        T::BLCK_SIZE,
        T::VecDotType::zeros(),
        quantize,
        |wr: &[T], xr: &[T::VecDotType]| T::vec_dot(k, wr, xr),
        None,
    );
}

/// ggml's `quantize_row_q8_K`.
fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    let zero = activations::BlockQ8K {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    };
    let mut ours = vec![zero; out.len()];
    activations::quantize_q8_k(x, &mut ours);
    // SAFETY: both are repr(C) { f32, [i8; 256], [i16; 16] } (sizes checked in tests).
    let src = unsafe { std::slice::from_raw_parts(ours.as_ptr() as *const BlockQ8K, ours.len()) };
    out.clone_from_slice(src);
}

/// candle's blocks of a type (how the weights are stored) as ours (what our kernels read).
/// Both are repr(C) layouts of ggml's block of the same size (each kernel module's tests
/// check the sizes).
fn view<C, O>(b: &[C]) -> &[O] {
    assert_eq!(std::mem::size_of::<C>(), std::mem::size_of::<O>());
    // SAFETY: same size, and both are plain bytes and halves whose every bit pattern is
    // valid (ggml's block layout); the alignment of ours is at most candle's (2).
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const O, b.len()) }
}

/// candle's Q8_0 blocks (how the weights are stored) as ours (what our kernel reads).
fn q8_0_blocks(b: &[BlockQ8_0]) -> &[q8_0::BlockQ8_0] {
    // SAFETY: both are repr(C) { f16, [i8; 32] } (sizes checked in q4_1's tests).
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const q8_0::BlockQ8_0, b.len()) }
}

/// ggml's `quantize_row_q8_0`: 32 values to one `d` (f16) and 32 `i8`.
fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    let mut ours = vec![activations::BlockQ8_0::ZERO; out.len()];
    activations::quantize_q8_0(x, &mut ours);
    // SAFETY: both are repr(C) { f16, [i8; 32] } (sizes checked in tests).
    let src = unsafe { std::slice::from_raw_parts(ours.as_ptr() as *const BlockQ8_0, ours.len()) };
    out.clone_from_slice(src);
}

/// The one matmul loop: quantize each activation row with `quantize`, then compute
/// output columns in parallel tasks; each task reads its weight rows once for all `m`
/// activation rows (that is what makes batched decode cheap).
#[allow(clippy::too_many_arguments)]
fn blocked_matmul<W: Sync, A: Clone + Send + Sync>(
    w: &[W],
    x: &[f32],
    m: usize,
    k: usize,
    y: &mut [f32],
    block: usize,
    zero: A,
    quantize: impl Fn(&[f32], &mut [A]),
    dot: impl Fn(&[W], &[A]) -> f32 + Sync,
    rows: Option<&RowKernels<W, A>>,
) {
    let per_row = k / block; // blocks per weight row and per activation row
    let n = w.len() / per_row; // output columns

    // The work of one activation row in 32-weight block dots, what `for_each_chunk`
    // weighs against a fork (a K-quant block holds 256 weights, a BF16 one 1).
    let work = w.len() * block / 32;
    let mut xq = vec![zero; m * per_row]; // (m, per_row)
    for (xr, qr) in x.chunks_exact(k).zip(xq.chunks_exact_mut(per_row)) {
        quantize(xr, qr);
    }
    if m == 1 {
        for_each_chunk(y, COLUMNS_PER_TASK, 1, work, |(task, ys)| {
            let c0 = task * COLUMNS_PER_TASK;
            for (j, out) in ys.iter_mut().enumerate() {
                let c = c0 + j;
                *out = dot(&w[c * per_row..(c + 1) * per_row], &xq);
            }
        });
        return;
    }
    let weight_row = |c: usize| &w[c * per_row..(c + 1) * per_row];
    // The dots of weight row `wr` with activation rows `r0..r0 + out.len()`, eight or
    // four at a time where there are multi-row kernels; `out[i]` gets row `r0 + i`'s at
    // stride `stride`.
    let dots = |wr: &[W], r0: usize, n_rows: usize, out: &mut [f32], stride: usize| {
        let xr = |r: usize| &xq[r * per_row..(r + 1) * per_row];
        let mut i = 0;
        if let Some(k) = rows {
            while i + PREFILL_ROWS <= n_rows {
                let eight = (k.eight)(wr, std::array::from_fn(|j| xr(r0 + i + j)));
                for (j, v) in eight.into_iter().enumerate() {
                    out[(i + j) * stride] = v;
                }
                i += PREFILL_ROWS;
            }
            while i + ROWS <= n_rows {
                let four = (k.four)(wr, std::array::from_fn(|j| xr(r0 + i + j)));
                for (j, v) in four.into_iter().enumerate() {
                    out[(i + j) * stride] = v;
                }
                i += ROWS;
            }
        }
        for i in i..n_rows {
            out[i * stride] = dot(wr, xr(r0 + i));
        }
    };
    if m > ROWS_PER_TASK {
        // A prefill chunk: each task owns ROWS_PER_TASK rows of `y` and streams every
        // weight row past their activations once, which stay in L1. (Column tasks over
        // all `m` rows would read each activation row from L2 or beyond once per
        // output column.)
        for_each_chunk(y, ROWS_PER_TASK * n, 1, work * m, |(task, ys)| {
            let rows = ys.len() / n;
            for c in 0..n {
                dots(weight_row(c), task * ROWS_PER_TASK, rows, &mut ys[c..], n);
            }
        });
        return;
    }
    // A few rows (batched candidates): too few to split, so tasks take output columns
    // and write a transposed (n, m) tile, which one pass transposes back.
    let mut yt = vec![0f32; n * m]; // (n, m)
    for_each_chunk(
        &mut yt,
        COLUMNS_PER_TASK * m,
        1,
        work * m,
        |(task, tile)| {
            let c0 = task * COLUMNS_PER_TASK;
            for (j, col) in tile.chunks_exact_mut(m).enumerate() {
                dots(weight_row(c0 + j), 0, m, col, 1);
            }
        },
    );
    for (c, col) in yt.chunks_exact(m).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * n + c] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::GgmlType;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// Float reference: dequantize every row and multiply in f32.
    fn reference(w: &Matrix, x: &[f32], m: usize) -> Vec<f32> {
        let mut row = vec![0f32; w.cols];
        let mut y = vec![0f32; m * w.rows];
        for c in 0..w.rows {
            w.row_to_f32(c, &mut row);
            for r in 0..m {
                y[r * w.rows + c] = row.iter().zip(&x[r * w.cols..]).map(|(a, b)| a * b).sum();
            }
        }
        y
    }

    fn quantized(ttype: TensorType, rows: usize, cols: usize, rng: &mut SmallRng) -> Matrix {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        fn pack<T: GgmlType>(data: &[f32]) -> Vec<u8> {
            let mut b = vec![T::zeros(); data.len() / T::BLCK_SIZE];
            T::from_float(data, &mut b);
            let n = b.len() * std::mem::size_of::<T>();
            // SAFETY: plain-old-data blocks viewed as bytes.
            unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u8, n).to_vec() }
        }
        let bytes = match ttype {
            TensorType::F32 => pack::<f32>(&data),
            TensorType::F16 => pack::<f16>(&data),
            TensorType::BF16 => pack::<bf16>(&data),
            TensorType::Q4_0 => pack::<BlockQ4_0>(&data),
            TensorType::Q4_1 => pack::<candle_core::quantized::k_quants::BlockQ4_1>(&data),
            TensorType::Q5_0 => pack::<BlockQ5_0>(&data),
            TensorType::Q5_1 => pack::<BlockQ5_1>(&data),
            TensorType::Q8_0 => pack::<BlockQ8_0>(&data),
            TensorType::Q4K => pack::<BlockQ4K>(&data),
            TensorType::Q5K => pack::<BlockQ5K>(&data),
            TensorType::Q6K => pack::<BlockQ6K>(&data),
            _ => unreachable!(),
        };
        Matrix::from_bytes(ttype, rows, cols, &bytes).unwrap()
    }

    #[test]
    fn every_type_matches_the_dequantized_float_product() {
        let mut rng = SmallRng::seed_from_u64(42);
        let cols = 512;
        for ttype in [
            TensorType::F32,
            TensorType::F16,
            TensorType::BF16,
            TensorType::Q4_0,
            TensorType::Q4_1,
            TensorType::Q5_0,
            TensorType::Q5_1,
            TensorType::Q8_0,
            TensorType::Q4K,
            TensorType::Q5K,
            TensorType::Q6K,
        ] {
            for m in [1, 3, 5, 21] {
                let w = quantized(ttype, 130, cols, &mut rng);
                let x: Vec<f32> = (0..m * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut y = vec![0f32; m * w.rows];
                w.matmul(&x, m, &mut y);
                let want = reference(&w, &x, m);
                // Activations are quantized to 8 bits (step ~1/127 of a block's max,
                // bf16 has 8 mantissa bits): over 512 terms with weights of std ~0.29
                // the error has a std of ~0.015, so 0.1 is over 6 sigma, while a wrong
                // nibble order or scale is off by O(1).
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 0.1, "{ttype} m={m}: index {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        let err = Matrix::from_bytes(TensorType::Q4_1, 4, 64, &[0u8; 10])
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs 160 bytes"), "{err}");
    }
}
