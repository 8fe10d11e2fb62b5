//! Q4_K weights times Q8_K-quantized activations, as ggml defines them: the 4-bit format
//! of Q4_K_M files, for every matrix whose rows divide into 256-weight super-blocks.
//!
//! Q4_K super-block (144 bytes, 256 weights): `d`, `dmin` (f16), 12 bytes of eight 6-bit
//! scales and eight 6-bit mins, and 128 bytes of nibbles: eight sub-blocks of 32 weights,
//! `w = d * sc[j] * q - dmin * m[j]`, sub-block `j`'s nibbles in `qs[32 (j / 2)..][..32]`
//! (low nibbles for even `j`, high for odd). With Q8_K activations:
//! `dot(w, x) = d * dx * sum_j sc[j] * sum(q * qs) - dmin * dx * sum_j m[j] * sum(qs)`,
//! the last sum from the activations' 16-quant sums.

use half::f16;

use super::q8_k::scales_and_mins;
pub use super::q8_k::{quantize, to_act, Act, BlockQ8K, BLOCK_K, ZERO};

/// One Q4_K super-block, byte-identical to ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

impl BlockQ4K {
    /// The 256 codes (0..16), in element order.
    pub fn codes(&self) -> [u8; BLOCK_K] {
        std::array::from_fn(|i| (self.qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0xF)
    }
}

dot_kernels!(BlockQ4K, Act);

/// The x86 kernel (AVX2 and FMA), ggml's `ggml_vec_dot_q4_K_q8_K` for R rows: per
/// super-block the mins times the activations' sub-block sums into four float lanes, and
/// the nibbles' pair products with the activations times each sub-block's scale, summed
/// in `i32`, with one multiply-add of `d * dx` into eight float lanes.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ4K], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::hsum;
    use std::arch::x86_64::*;
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R];
    for (b, wb) in w.iter().enumerate() {
        let (d, dmin) = (wb.d.to_f32(), wb.dmin.to_f32());
        let (sc, mn) = scales_and_mins(&wb.scales);
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(mn.as_ptr() as *const __m128i));
        // Sub-block j's scale in every i16 lane.
        let scale = |j: usize| _mm256_set1_epi16(sc[j] as i16);
        let q4: [__m256i; 4] = std::array::from_fn(|j| {
            _mm256_loadu_si256(wb.qs.as_ptr().add(32 * j) as *const __m256i)
        });
        for r in 0..R {
            let xb = &x[r][b];
            // The mins against the activations' sums per 32 (pairs of 16-quant sums).
            let q8sums = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(-xb.d * dmin), _mm_cvtepi32_ps(prod), acc_m[r]);
            let mut sumi = _mm256_setzero_si256();
            for (j, &bits) in q4.iter().enumerate() {
                let low = _mm256_and_si256(bits, m4);
                let high = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                let a_low = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j) as *const __m256i);
                let a_high = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j + 32) as *const __m256i);
                // Pair sums fit i16: 2 * 15 * 127 < 32767.
                let p_low = _mm256_madd_epi16(scale(2 * j), _mm256_maddubs_epi16(low, a_low));
                let p_high =
                    _mm256_madd_epi16(scale(2 * j + 1), _mm256_maddubs_epi16(high, a_high));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_low, p_high));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(xb.d * d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| {
        let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        hsum(acc[r]) + _mm_cvtss_f32(m)
    })
}

/// The browser's kernel (wasm SIMD128): each super-block's codes times their sub-block's
/// scale, as `i16` (at most 15 * 63), once for all rows; `i16` pair dots with the
/// widened activations ([`super::q8_k::Q8KWide`]) into four `i32` lanes; the mins term
/// from the activations' 16-quant sums.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::{scales_and_mins, Act, BlockQ4K, BLOCK_K};
    use crate::cpu::wide::{f16_to_f32_finite, simd};
    use core::arch::wasm32::*;

    /// A Q4_K or Q5_K super-block's codes times their sub-block scales, as 32 vectors
    /// of eight `i16` in element order, unpacked sixteen at a time: sub-blocks `2p` and
    /// `2p + 1` are the low and high nibbles of bytes `32p..32p + 32` of `qs`, and Q5_K's
    /// fifth bit of element `l` of sub-block `j` is bit `j` of `qh[l]`. Codes are at most
    /// 31 and scales 63, so each product fits `i16`.
    #[inline]
    pub(crate) fn scaled_codes(
        qs: &[u8; 128],
        qh: Option<&[u8; 32]>,
        sc: &[u8; 8],
    ) -> [v128; BLOCK_K / 8] {
        let (m4, one) = (u8x16_splat(0x0F), u8x16_splat(1));
        // SAFETY: 16-byte unaligned loads inside `qs` (128 bytes) and `qh` (32 bytes).
        let load = |p: *const u8| unsafe { v128_load(p as *const v128) };
        let high = qh.map(|h| [load(h.as_ptr()), load(h[16..].as_ptr())]);
        let mut out = [i16x8_splat(0); BLOCK_K / 8];
        for p in 0..4 {
            let bytes = [
                load(qs[32 * p..].as_ptr()),
                load(qs[32 * p + 16..].as_ptr()),
            ];
            for j in [2 * p, 2 * p + 1] {
                let s = i16x8_splat(sc[j] as i16);
                for (half, &b) in bytes.iter().enumerate() {
                    let mut codes = if j % 2 == 0 {
                        v128_and(b, m4)
                    } else {
                        u8x16_shr(b, 4)
                    };
                    if let Some(h) = high {
                        let bit = v128_and(u8x16_shr(h[half], j as u32), one);
                        codes = v128_or(codes, i8x16_shl(bit, 4));
                    }
                    out[4 * j + 2 * half] = i16x8_mul(u16x8_extend_low_u8x16(codes), s);
                    out[4 * j + 2 * half + 1] = i16x8_mul(u16x8_extend_high_u8x16(codes), s);
                }
            }
        }
        out
    }

    /// Sums of `scaled` (32 vectors) times a super-block's Q8_K quants, in four lanes.
    #[inline]
    pub(crate) fn dot_scaled(scaled: &[v128; BLOCK_K / 8], xb: &Act) -> v128 {
        let mut sums = i32x4_splat(0);
        for (k, chunk) in scaled.chunks_exact(4).enumerate() {
            let xs: &[i16; 32] = xb.qs[32 * k..][..32].try_into().expect("32 quants");
            sums = i32x4_add(
                sums,
                simd::dot32([chunk[0], chunk[1], chunk[2], chunk[3]], xs),
            );
        }
        sums
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ4K], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        let mut acc_m = [0f32; R];
        for (b, wb) in w.iter().enumerate() {
            let (sc, mn) = scales_and_mins(&wb.scales);
            let scaled = scaled_codes(&wb.qs, None, &sc);
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
pub fn dot_scalar(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
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
    use candle_core::quantized::k_quants::{BlockQ4K as CQ4K, BlockQ8K as CQ8K, GgmlType};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn weights(rng: &mut SmallRng, n_blocks: usize, scale: f32) -> Vec<BlockQ4K> {
        let x: Vec<f32> = (0..n_blocks * BLOCK_K)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let mut c = vec![CQ4K::zeros(); n_blocks];
        CQ4K::from_float(&x, &mut c);
        // SAFETY: both are repr(C) { f16, f16, [u8; 12], [u8; 128] } (sizes below).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const BlockQ4K, n_blocks) }.to_vec()
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
        assert_eq!(std::mem::size_of::<BlockQ4K>(), std::mem::size_of::<CQ4K>());
        assert_eq!(std::mem::size_of::<BlockQ4K>(), 144);
    }

    #[test]
    fn codes_are_candles_dequantization() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = weights(&mut rng, 3, 1.0);
        // SAFETY: as in `weights`.
        let c = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ4K, w.len()) };
        let mut want = vec![0f32; w.len() * BLOCK_K];
        CQ4K::to_float(c, &mut want);
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
                    std::slice::from_raw_parts(w.as_ptr() as *const CQ4K, n_blocks),
                    std::slice::from_raw_parts(x.as_ptr() as *const CQ8K, n_blocks),
                )
            };
            let theirs = CQ4K::vec_dot(n_blocks * BLOCK_K, cw, cx);
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
        // Codes 15, scales and mins 63, against 127: the largest sums.
        let mut packed = [0u8; 12];
        packed.iter_mut().for_each(|b| *b = 0xFF);
        let w = vec![
            BlockQ4K {
                d: f16::ONE,
                dmin: f16::from_f32(0.5),
                scales: packed,
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
