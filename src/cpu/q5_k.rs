//! Q5_K weights times Q8_K-quantized activations, as ggml defines them: the 5-bit format
//! of Q5_K_M files, for every matrix whose rows divide into 256-weight super-blocks.
//!
//! Q5_K super-block (176 bytes, 256 weights): Q4_K's `d`, `dmin`, scales and nibbles,
//! plus `qh[32]`: sub-block `j`'s fifth bits are bit `j` of `qh[0..32]`. So
//! `w = d * sc[j] * q - dmin * m[j]` with `q` of 5 bits, and with Q8_K activations
//! `dot(w, x) = d * dx * sum_j sc[j] * sum(q * qs) - dmin * dx * sum_j m[j] * sum(qs)`.

use half::f16;

use super::q8_k::scales_and_mins;
pub use super::q8_k::{quantize, to_act, Act, BlockQ8K, BLOCK_K, ZERO};

/// One Q5_K super-block, byte-identical to ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

impl BlockQ5K {
    /// The 256 codes (0..32), in element order.
    pub fn codes(&self) -> [u8; BLOCK_K] {
        std::array::from_fn(|i| {
            let (j, l) = (i / 32, i % 32);
            let nibble = (self.qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            nibble | ((self.qh[l] >> j) & 1) << 4
        })
    }
}

dot_kernels!(BlockQ5K, Act);

/// The x86 kernel (AVX2 and FMA), ggml's `ggml_vec_dot_q5_K_q8_K` for R rows: as the
/// Q4_K kernel, with each sub-block's fifth bits from `qh` added to its nibbles.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ5K], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::hsum;
    use std::arch::x86_64::*;
    let m4 = _mm256_set1_epi8(0xF);
    let ones = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut summs = [0f32; R];
    for (b, wb) in w.iter().enumerate() {
        let (d, dmin) = (wb.d.to_f32(), wb.dmin.to_f32());
        let (sc, mn) = scales_and_mins(&wb.scales);
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(mn.as_ptr() as *const __m128i));
        let high = _mm256_loadu_si256(wb.qh.as_ptr() as *const __m256i);
        // Sub-block s's codes: its nibbles plus 16 times bit s of each qh byte.
        let codes = |s: usize| {
            let bits = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * (s / 2)) as *const __m256i);
            let nibbles = if s % 2 == 0 {
                _mm256_and_si256(bits, m4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4)
            };
            let fifth = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(s as i32)), ones);
            _mm256_add_epi8(nibbles, _mm256_slli_epi16(fifth, 4))
        };
        let q: [__m256i; 8] = std::array::from_fn(codes);
        for r in 0..R {
            let xb = &x[r][b];
            let q8sums = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            let zero = _mm_setzero_si128();
            let total = _mm_hadd_epi32(_mm_hadd_epi32(prod, zero), zero);
            summs[r] += -xb.d * dmin * _mm_cvtsi128_si32(total) as f32;
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let a0 = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j) as *const __m256i);
                let a1 = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j + 32) as *const __m256i);
                // Pair sums fit i16: 2 * 31 * 127 < 32767.
                let p0 = _mm256_madd_epi16(
                    _mm256_set1_epi16(sc[2 * j] as i16),
                    _mm256_maddubs_epi16(q[2 * j], a0),
                );
                let p1 = _mm256_madd_epi16(
                    _mm256_set1_epi16(sc[2 * j + 1] as i16),
                    _mm256_maddubs_epi16(q[2 * j + 1], a1),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(xb.d * d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + summs[r])
}

/// The browser's kernel (wasm SIMD128), as the Q4_K one: codes times their sub-block's
/// scale as `i16` (at most 31 * 63) once per super-block, `i16` pair dots with the
/// widened activations, the mins term from the activations' 16-quant sums.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{scales_and_mins, Act, BlockQ5K};
    use crate::cpu::q4_k::simd128::{dot_scaled, scaled_codes};
    use crate::cpu::wide::{f16_to_f32_finite, simd};
    use core::arch::wasm32::*;

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ5K], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        let mut acc_m = [0f32; R];
        for (b, wb) in w.iter().enumerate() {
            let (sc, mn) = scales_and_mins(&wb.scales);
            let scaled = scaled_codes(&wb.qs, Some(&wb.qh), &sc);
            let (d, dmin) = (f16_to_f32_finite(wb.d), f16_to_f32_finite(wb.dmin));
            for r in 0..R {
                let xb = &x[r][b];
                let sums = dot_scaled(&scaled, xb);
                acc[r] = f32x4_add(
                    acc[r],
                    f32x4_mul(f32x4_splat(d * xb.d), f32x4_convert_i32x4(sums)),
                );
                let summ: i32 = (0..8)
                    .map(|j| mn[j] as i32 * (xb.bsums[2 * j] as i32 + xb.bsums[2 * j + 1] as i32))
                    .sum();
                acc_m[r] -= dmin * xb.d * summ as f32;
            }
        }
        std::array::from_fn(|r| simd::hsum(acc[r]) + acc_m[r])
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::dot_rows as dot_rows_simd128;

/// The plain reference implementation (also what targets without SIMD run).
pub fn dot_scalar(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(wb, xb)| {
            let (sc, mn) = scales_and_mins(&wb.scales);
            let q = wb.codes();
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..8 {
                let sub: i32 = (32 * j..32 * j + 32)
                    .map(|i| q[i] as i32 * xb.qs[i] as i32)
                    .sum();
                sumi += sc[j] as i32 * sub;
                summ += mn[j] as i32 * (xb.bsums[2 * j] as i32 + xb.bsums[2 * j + 1] as i32);
            }
            wb.d.to_f32() * xb.d * sumi as f32 - wb.dmin.to_f32() * xb.d * summ as f32
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::activations::quantize_q8_k;
    use crate::cpu::ROWS;
    use candle_core::quantized::k_quants::{BlockQ5K as CQ5K, BlockQ8K as CQ8K, GgmlType};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn weights(rng: &mut SmallRng, n_blocks: usize, scale: f32) -> Vec<BlockQ5K> {
        let x: Vec<f32> = (0..n_blocks * BLOCK_K)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let mut c = vec![CQ5K::zeros(); n_blocks];
        CQ5K::from_float(&x, &mut c);
        // SAFETY: both are repr(C) { f16, f16, [u8; 12], [u8; 32], [u8; 128] } (sizes below).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const BlockQ5K, n_blocks) }.to_vec()
    }

    fn activations(rng: &mut SmallRng, n_blocks: usize, range: f32) -> Vec<BlockQ8K> {
        let x: Vec<f32> = (0..n_blocks * BLOCK_K)
            .map(|_| rng.random_range(-range..range))
            .collect();
        let mut q = vec![BlockQ8K::ZERO; n_blocks];
        quantize_q8_k(&x, &mut q);
        q
    }

    fn acts(q: &[BlockQ8K]) -> Vec<Act> {
        q.iter().map(to_act).collect()
    }

    #[test]
    fn blocks_are_ggml_sized() {
        assert_eq!(std::mem::size_of::<BlockQ5K>(), std::mem::size_of::<CQ5K>());
        assert_eq!(std::mem::size_of::<BlockQ5K>(), 176);
    }

    #[test]
    fn codes_are_candles_dequantization() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = weights(&mut rng, 3, 1.0);
        // SAFETY: as in `weights`.
        let c = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ5K, w.len()) };
        let mut want = vec![0f32; w.len() * BLOCK_K];
        CQ5K::to_float(c, &mut want);
        for (b, wb) in w.iter().enumerate() {
            let (sc, mn) = scales_and_mins(&wb.scales);
            for (i, &q) in wb.codes().iter().enumerate() {
                let (d1, m1) = (
                    wb.d.to_f32() * sc[i / 32] as f32,
                    wb.dmin.to_f32() * mn[i / 32] as f32,
                );
                assert_eq!(
                    d1 * q as f32 - m1,
                    want[b * BLOCK_K + i],
                    "block {b} element {i}"
                );
            }
        }
    }

    #[test]
    fn simd_dot_matches_scalar_and_candle() {
        let mut rng = SmallRng::seed_from_u64(5);
        for n_blocks in [1, 2, 6] {
            let w = weights(&mut rng, n_blocks, 0.2);
            let x = activations(&mut rng, n_blocks, 3.0);
            let (fast, slow) = (dot(&w, &acts(&x)), dot_scalar(&w, &x));
            // SAFETY: as in `weights`; Q8_K blocks are candle's layout (q6_k's tests).
            let (cw, cx) = unsafe {
                (
                    std::slice::from_raw_parts(w.as_ptr() as *const CQ5K, n_blocks),
                    std::slice::from_raw_parts(x.as_ptr() as *const CQ8K, n_blocks),
                )
            };
            let theirs = CQ5K::vec_dot(n_blocks * BLOCK_K, cw, cx);
            for (what, v) in [("scalar", slow), ("candle", theirs)] {
                assert!(
                    (fast - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{n_blocks} blocks: simd {fast} vs {what} {v}"
                );
            }
        }
    }

    #[test]
    fn extreme_codes_and_scales_do_not_overflow() {
        let w = vec![
            BlockQ5K {
                d: f16::ONE,
                dmin: f16::from_f32(0.5),
                scales: [0xFF; 12],
                qh: [0xFF; 32],
                qs: [0xFF; 128],
            };
            2
        ];
        let mut xb = BlockQ8K {
            d: 1.0,
            qs: std::array::from_fn(|i| if i % 7 == 0 { -127 } else { 127 }),
            bsums: [0; 16],
        };
        for (s, q) in xb.bsums.iter_mut().zip(xb.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        let x = vec![xb; 2];
        let (fast, slow) = (dot(&w, &acts(&x)), dot_scalar(&w, &x));
        assert!((fast - slow).abs() <= 1e-6 * slow.abs(), "{fast} vs {slow}");
        assert_ne!(slow, 0.0);
    }

    #[test]
    fn dot4_is_bit_identical_to_four_dots() {
        let mut rng = SmallRng::seed_from_u64(4);
        let w = weights(&mut rng, 3, 0.1);
        let rows: Vec<Vec<Act>> = (0..ROWS)
            .map(|_| acts(&activations(&mut rng, 3, 2.0)))
            .collect();
        let four = dot4(&w, std::array::from_fn(|r| rows[r].as_slice()));
        for r in 0..ROWS {
            assert_eq!(four[r].to_bits(), dot(&w, &rows[r]).to_bits(), "row {r}");
        }
    }
}
