//! Q5_1 weights times Q8_1-quantized activations, as ggml defines them: the format
//! llama.cpp falls back to in Q5_K_M files for rows that do not divide into 256-weight
//! super-blocks.
//!
//! Q5_1 block (24 bytes, 32 weights): `w[j] = d * q[j] + m`, `q` of 5 bits: the low
//! nibble of `qs[j]` is element `j`'s low four bits and the high nibble element
//! `j + 16`'s; bit `j` of `qh` (little-endian u32) is element `j`'s fifth bit.
//! With Q8_1 activations (`x[j] ~= dx * qs[j]`, `s = dx * sum(qs)`):
//! `dot(w, x) = dw * dx * sum(q * qs) + m * s`.
//!
//! The activations are [`super::q4_1`]'s (`Act`, `quantize`).

use half::f16;

pub use super::q4_1::{quantize, to_act, Act, BlockQ8_1, BLOCK};

/// One Q5_1 block, byte-identical to ggml's `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl BlockQ5_1 {
    /// The 32 codes (0..32), in element order.
    pub fn codes(&self) -> [u8; BLOCK] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| {
            let nibble = if j < 16 {
                self.qs[j] & 0xF
            } else {
                self.qs[j - 16] >> 4
            };
            nibble | (((qh >> j) & 1) as u8) << 4
        })
    }
}

dot_kernels!(BlockQ5_1, Act);

/// The x86 kernel (AVX2 and FMA), ggml's `ggml_vec_dot_q5_1_q8_1` for R rows, as the
/// Q4_1 kernel: per block the codes as bytes (a nibble, or-ed with 16 where the fifth
/// bit is set), their pair products with the activations, one multiply-add of
/// `dw * dx`; `m * s` summed apart.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ5_1], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::{bytes_from_bits_32, hsum, sum_u8_i8, two_f16, two_f32};
    use std::arch::x86_64::*;
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let fifth_bit = _mm256_set1_epi8(0x10);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R]; // lane 1: sum of m * s
    for (b, wb) in w.iter().enumerate() {
        let dm = two_f16(wb as *const BlockQ5_1 as *const u8); // [dw, m, 0, 0]
        let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
        let nibbles = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            low_nibbles,
        );
        let fifth = _mm256_and_si256(bytes_from_bits_32(wb.qh.as_ptr()), fifth_bit);
        let q = _mm256_or_si256(nibbles, fifth);
        for r in 0..R {
            let xb = &x[r][b];
            let s = _mm_mul_ps(dm, two_f32(&xb.d)); // [dw * dx, m * s, 0, 0]
            acc_m[r] = _mm_add_ps(acc_m[r], s);
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // Pair sums fit i16: 2 * 31 * 127 < 32767.
            let sums = _mm256_cvtepi32_ps(sum_u8_i8(q, a));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), sums, acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(acc_m[r])))
}

/// The browser's kernel (wasm SIMD128), as the Q4_1 kernel: each block read as eight
/// `u16` lanes of four nibbles (in [`crate::cpu::wide::NIBBLE_LANES`] order, the order
/// the widened activations come in), each nibble's fifth bit added from `qh` by lane
/// masks, four `i32x4.dot_i16x8_s` for the integer sum.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{Act, BlockQ5_1};
    use crate::cpu::wide::simd::{dot32, f16x4_to_f32x4, hsum};
    use core::arch::wasm32::*;

    /// A block's 32 codes as four `i16` vectors in NIBBLE_LANES order.
    #[inline]
    fn codes(wb: &BlockQ5_1) -> [v128; 4] {
        let nibble = u16x8_splat(0x000F);
        // SAFETY: `qs` is 16 bytes; the load is unaligned.
        let packed = unsafe { v128_load(wb.qs.as_ptr() as *const v128) };
        let qh = u32::from_le_bytes(wb.qh);
        // Vector v, lane i holds element 2i (v 0), 2i + 16 (v 1), 2i + 1 (v 2) or
        // 2i + 17 (v 3): its fifth bit is bit (2i) or (2i + 1) of the low or high half.
        let (low, high) = (u16x8_splat(qh as u16), u16x8_splat((qh >> 16) as u16));
        let even = u16x8(1, 1 << 2, 1 << 4, 1 << 6, 1 << 8, 1 << 10, 1 << 12, 1 << 14);
        let odd = u16x8_shl(even, 1);
        let fifth = |half: v128, mask: v128| {
            v128_and(
                i16x8_ne(v128_and(half, mask), i16x8_splat(0)),
                u16x8_splat(16),
            )
        };
        [
            v128_or(v128_and(packed, nibble), fifth(low, even)),
            v128_or(v128_and(u16x8_shr(packed, 4), nibble), fifth(high, even)),
            v128_or(v128_and(u16x8_shr(packed, 8), nibble), fifth(low, odd)),
            v128_or(u16x8_shr(packed, 12), fifth(high, odd)),
        ]
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ5_1], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        let mut acc_m = [f32x4_splat(0.0); R]; // lane 1: sum of m * s
        for (b, wb) in w.iter().enumerate() {
            let q = codes(wb);
            // SAFETY: `d` and `m` are the block's first 4 bytes; the load is unaligned.
            let dm = f16x4_to_f32x4(u32x4_extend_low_u16x8(unsafe {
                v128_load32_zero(wb as *const BlockQ5_1 as *const u32)
            })); // [dw, m, 0, 0]
            for r in 0..R {
                let xb = &x[r][b];
                // SAFETY: `d` and `s` are adjacent f32s: one unaligned 8-byte load.
                let ds = unsafe { v128_load64_zero(&xb.d as *const f32 as *const u64) };
                let s = f32x4_mul(dm, ds); // [dw * dx, m * s, 0, 0]
                acc_m[r] = f32x4_add(acc_m[r], s);
                let scale = i32x4_shuffle::<0, 0, 0, 0>(s, s);
                let sums = f32x4_convert_i32x4(dot32(q, &xb.qs));
                acc[r] = f32x4_add(acc[r], f32x4_mul(scale, sums));
            }
        }
        std::array::from_fn(|r| hsum(acc[r]) + f32x4_extract_lane::<1>(acc_m[r]))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::dot_rows as dot_rows_simd128;

/// The plain reference implementation (also what targets without SIMD run).
pub fn dot_scalar(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    let (mut sum, mut sum_m) = (0f32, 0f32);
    for (wb, xb) in w.iter().zip(x) {
        let sumi: i32 = wb
            .codes()
            .iter()
            .zip(&xb.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sum += wb.d.to_f32() * xb.d.to_f32() * sumi as f32;
        sum_m += wb.m.to_f32() * xb.s.to_f32();
    }
    sum + sum_m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::activations::quantize_q8_1;
    use crate::cpu::ROWS;
    use candle_core::quantized::k_quants::{BlockQ5_1 as CQ5_1, BlockQ8_1 as CQ8_1, GgmlType};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn weights(rng: &mut SmallRng, n_blocks: usize, scale: f32) -> Vec<BlockQ5_1> {
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let mut c = vec![CQ5_1::zeros(); n_blocks];
        CQ5_1::from_float(&x, &mut c);
        // SAFETY: both are repr(C) { f16, f16, [u8; 4], [u8; 16] } (sizes below).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const BlockQ5_1, n_blocks) }.to_vec()
    }

    fn activations(rng: &mut SmallRng, n_blocks: usize, range: f32) -> Vec<BlockQ8_1> {
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-range..range))
            .collect();
        let mut q = vec![BlockQ8_1::ZERO; n_blocks];
        quantize_q8_1(&x, &mut q);
        q
    }

    fn acts(q: &[BlockQ8_1]) -> Vec<Act> {
        q.iter().map(to_act).collect()
    }

    #[test]
    fn blocks_are_ggml_sized() {
        assert_eq!(
            std::mem::size_of::<BlockQ5_1>(),
            std::mem::size_of::<CQ5_1>()
        );
        assert_eq!(std::mem::size_of::<BlockQ5_1>(), 24);
    }

    #[test]
    fn codes_are_candles_dequantization() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = weights(&mut rng, 8, 1.0);
        // SAFETY: as in `weights`.
        let c = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ5_1, w.len()) };
        let mut want = vec![0f32; w.len() * BLOCK];
        CQ5_1::to_float(c, &mut want);
        for (b, wb) in w.iter().enumerate() {
            for (j, &q) in wb.codes().iter().enumerate() {
                let got = q as f32 * wb.d.to_f32() + wb.m.to_f32();
                assert_eq!(got, want[b * BLOCK + j], "block {b} element {j}");
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
            // SAFETY: as in `weights`; Q8_1 blocks are candle's layout (q4_1's tests).
            let (cw, cx) = unsafe {
                (
                    std::slice::from_raw_parts(w.as_ptr() as *const CQ5_1, n_blocks),
                    std::slice::from_raw_parts(x.as_ptr() as *const CQ8_1, n_blocks),
                )
            };
            let theirs = CQ5_1::vec_dot(n_blocks * BLOCK, cw, cx);
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
        // Codes 31 against 127: the largest pair sums.
        let w = vec![
            BlockQ5_1 {
                d: f16::ONE,
                m: f16::from_f32(-2.0),
                qh: [0xFF; 4],
                qs: [0xFF; 16],
            };
            3
        ];
        let x = vec![
            BlockQ8_1 {
                d: f16::ONE,
                s: f16::from_f32(32.0 * 127.0),
                qs: [127; 32],
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
