//! Q5_0 weights times Q8_0-quantized activations, as ggml defines them: the format
//! llama.cpp falls back to in Q4_K_M files for rows that do not divide into 256-weight
//! super-blocks (every 576-wide matrix of the default model, 166 of its tensors).
//!
//! Q5_0 block (22 bytes, 32 weights): `w[j] = d * (q[j] - 16)`, `q` of 5 bits: the low
//! nibble of `qs[j]` is element `j`'s low four bits and the high nibble element
//! `j + 16`'s; bit `j` of `qh` (little-endian u32) is element `j`'s fifth bit.
//! With Q8_0 activations: `dot(w, x) = dw * dx * sum((q - 16) * qs)`.
//!
//! The activations are [`super::q8_0`]'s (`Act`, `quantize`): the same Q8_0 blocks its
//! kernels read.

use half::f16;

pub use super::q8_0::{quantize, to_act, Act, BlockQ8_0};

/// Weights per block.
pub const BLOCK: usize = 32;

/// One Q5_0 block, byte-identical to ggml's `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl BlockQ5_0 {
    /// The 32 codes minus 16, in element order.
    pub fn centered(&self) -> [i8; BLOCK] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| {
            let nibble = if j < 16 {
                self.qs[j] & 0xF
            } else {
                self.qs[j - 16] >> 4
            };
            (nibble | (((qh >> j) & 1) as u8) << 4) as i8 - 16
        })
    }
}

dot_kernels!(BlockQ5_0, Act);

/// The x86 kernel (AVX2 and FMA), ggml's `ggml_vec_dot_q5_0_q8_0` for R rows: per block
/// the codes minus 16 as signed bytes (a nibble, with 0xF0 or-ed in where the fifth bit
/// is clear: -16..15), pair sums of their products, then one multiply-add of
/// `dw * dx` into eight float lanes.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ5_0], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::{bytes_from_bits_32, hsum, sum_u8_i8};
    use std::arch::x86_64::*;
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let clear_fifth = _mm256_set1_epi8(0xF0u8 as i8);
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, wb) in w.iter().enumerate() {
        let dw = wb.d.to_f32();
        // 32 nibbles: elements 0..16 in the low lane, 16..32 in the high lane.
        let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
        let nibbles = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            low_nibbles,
        );
        let fifth = bytes_from_bits_32(wb.qh.as_ptr());
        let q = _mm256_or_si256(nibbles, _mm256_andnot_si256(fifth, clear_fifth));
        // Unsigned times signed: |q| times x with q's sign moved onto x.
        let q_abs = _mm256_sign_epi8(q, q);
        for r in 0..R {
            let xb = &x[r][b];
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // Pair sums fit i16: 2 * 16 * 127 < 32767.
            let sums = _mm256_cvtepi32_ps(sum_u8_i8(q_abs, _mm256_sign_epi8(a, q)));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb.d), sums, acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// The browser's kernel (wasm SIMD128): each block's codes minus 16 widened to four
/// `i16` vectors in element order, dotted with the widened activations
/// ([`super::wide::Q8_0Wide`]) into four `i32` lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{Act, BlockQ5_0};
    use crate::cpu::wide::{f16_to_f32_finite, simd};
    use core::arch::wasm32::*;

    /// A block's codes minus 16 as four `i16` vectors (elements 0-7, 8-15, 16-23, 24-31).
    #[inline]
    fn centered(wb: &BlockQ5_0) -> [v128; 4] {
        // SAFETY: `qs` is 16 bytes; the load is unaligned.
        let packed = unsafe { v128_load(wb.qs.as_ptr() as *const v128) };
        let low = v128_and(packed, u8x16_splat(0x0F)); // elements 0..16
        let high = u8x16_shr(packed, 4); // elements 16..32
        let qh = u32x4_splat(u32::from_le_bytes(wb.qh));
        // Byte j of the mask: element j's (or j + 16's) fifth bit, as 0 or 0xFF.
        let bits = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        let fifth = |first_byte: u8| {
            let spread = i8x16_swizzle(
                qh,
                u8x16(
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                    first_byte + 1,
                ),
            );
            i8x16_ne(v128_and(spread, bits), i8x16_splat(0))
        };
        // A nibble with 0xF0 or-ed in where the fifth bit is clear: the code minus 16.
        let clear = u8x16_splat(0xF0);
        let lo = v128_or(low, v128_andnot(clear, fifth(0)));
        let hi = v128_or(high, v128_andnot(clear, fifth(2)));
        [
            i16x8_extend_low_i8x16(lo),
            i16x8_extend_high_i8x16(lo),
            i16x8_extend_low_i8x16(hi),
            i16x8_extend_high_i8x16(hi),
        ]
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ5_0], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        for (b, wb) in w.iter().enumerate() {
            let q = centered(wb);
            let dw = f16_to_f32_finite(wb.d);
            for r in 0..R {
                let xb = &x[r][b];
                let sums = f32x4_convert_i32x4(simd::dot32(q, &xb.qs));
                acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_splat(dw * xb.d), sums));
            }
        }
        std::array::from_fn(|r| simd::hsum(acc[r]))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::dot_rows as dot_rows_simd128;

/// The plain reference implementation (also what targets without SIMD run).
pub fn dot_scalar(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(wb, xb)| {
            let sumi: i32 = wb
                .centered()
                .iter()
                .zip(&xb.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            wb.d.to_f32() * xb.d.to_f32() * sumi as f32
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::activations::quantize_q8_0;
    use crate::cpu::ROWS;
    use candle_core::quantized::k_quants::{BlockQ5_0 as CQ5_0, BlockQ8_0 as CQ8_0, GgmlType};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn weights(rng: &mut SmallRng, n_blocks: usize, scale: f32) -> Vec<BlockQ5_0> {
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let mut c = vec![CQ5_0::zeros(); n_blocks];
        CQ5_0::from_float(&x, &mut c);
        // SAFETY: both are repr(C) { f16, [u8; 4], [u8; 16] } (sizes checked below).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const BlockQ5_0, n_blocks) }.to_vec()
    }

    fn activations(rng: &mut SmallRng, n_blocks: usize, range: f32) -> Vec<BlockQ8_0> {
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-range..range))
            .collect();
        let mut q = vec![BlockQ8_0::ZERO; n_blocks];
        quantize_q8_0(&x, &mut q);
        q
    }

    fn acts(q: &[BlockQ8_0]) -> Vec<Act> {
        q.iter().map(to_act).collect()
    }

    #[test]
    fn blocks_are_ggml_sized() {
        assert_eq!(
            std::mem::size_of::<BlockQ5_0>(),
            std::mem::size_of::<CQ5_0>()
        );
        assert_eq!(std::mem::size_of::<BlockQ5_0>(), 22);
    }

    #[test]
    fn codes_are_candles_dequantization() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = weights(&mut rng, 8, 1.0);
        // SAFETY: as in `weights`.
        let c = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ5_0, w.len()) };
        let mut want = vec![0f32; w.len() * BLOCK];
        CQ5_0::to_float(c, &mut want);
        for (b, wb) in w.iter().enumerate() {
            for (j, &q) in wb.centered().iter().enumerate() {
                assert_eq!(
                    q as f32 * wb.d.to_f32(),
                    want[b * BLOCK + j],
                    "block {b} element {j}"
                );
            }
        }
    }

    #[test]
    fn simd_dot_matches_scalar_and_candle() {
        let mut rng = SmallRng::seed_from_u64(5);
        for n_blocks in [1, 2, 18, 48] {
            let w = weights(&mut rng, n_blocks, 0.2);
            let x = activations(&mut rng, n_blocks, 3.0);
            let (fast, slow) = (dot(&w, &acts(&x)), dot_scalar(&w, &x));
            // SAFETY: as in `weights`; Q8_0 blocks are candle's layout (q4_1's tests).
            let (cw, cx) = unsafe {
                (
                    std::slice::from_raw_parts(w.as_ptr() as *const CQ5_0, n_blocks),
                    std::slice::from_raw_parts(x.as_ptr() as *const CQ8_0, n_blocks),
                )
            };
            let theirs = CQ5_0::vec_dot(n_blocks * BLOCK, cw, cx);
            for (what, v) in [("scalar", slow), ("candle", theirs)] {
                assert!(
                    (fast - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{n_blocks} blocks: simd {fast} vs {what} {v}"
                );
            }
        }
    }

    #[test]
    fn extreme_codes_do_not_overflow() {
        // Codes 0 and 31 (-16 and +15) against -127 and 127: the largest pair sums.
        let w = vec![
            BlockQ5_0 {
                d: f16::ONE,
                qh: [0xAA; 4],
                qs: [0xF0; 16],
            };
            3
        ];
        let x = vec![
            BlockQ8_0 {
                d: f16::ONE,
                qs: std::array::from_fn(|j| if j % 2 == 0 { -127 } else { 127 }),
            };
            3
        ];
        assert_eq!(dot(&w, &acts(&x)), dot_scalar(&w, &x));
        assert_ne!(dot_scalar(&w, &x), 0.0);
    }

    #[test]
    fn dot4_is_bit_identical_to_four_dots() {
        let mut rng = SmallRng::seed_from_u64(4);
        let w = weights(&mut rng, 18, 0.1);
        let rows: Vec<Vec<Act>> = (0..ROWS)
            .map(|_| acts(&activations(&mut rng, 18, 2.0)))
            .collect();
        let four = dot4(&w, std::array::from_fn(|r| rows[r].as_slice()));
        for r in 0..ROWS {
            assert_eq!(four[r].to_bits(), dot(&w, &rows[r]).to_bits(), "row {r}");
        }
    }
}
