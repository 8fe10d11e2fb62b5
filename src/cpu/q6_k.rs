//! Q6_K weights times Q8_K-quantized activations, as ggml defines them: the format
//! llama.cpp gives a Q4_K_M file's output head and part of its value and down
//! projections, and a Q6_K file's every super-block-wide matrix.
//!
//! Q6_K super-block (210 bytes, 256 weights): 16 sub-blocks of 16 weights,
//! `w = d * scales[s] * (q - 32)` with `q` of 6 bits: four bits in `ql`, two in `qh`
//! (ggml's `dequantize_row_q6_K` gives their places; [`BlockQ6K::codes`] here).
//! With Q8_K activations: `dot(w, x) = dw * dx * sum_s scales[s] * sum((q - 32) * qs)`.

use half::f16;

pub use super::q8_k::{quantize, to_act, Act, BlockQ8K, BLOCK_K, ZERO};

/// One Q6_K super-block, byte-identical to ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

impl BlockQ6K {
    /// The 256 codes minus 32, in element order.
    pub fn codes(&self) -> [i8; BLOCK_K] {
        let mut q = [0i8; BLOCK_K];
        for half in 0..2 {
            let (ql, qh) = (&self.ql[64 * half..], &self.qh[32 * half..]);
            for l in 0..32 {
                let y = &mut q[128 * half + l..];
                y[0] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                y[32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                y[64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                y[96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        q
    }
}

dot_kernels!(BlockQ6K, Act);

/// The x86 kernel (AVX2 and FMA), ggml's `ggml_vec_dot_q6_K_q8_K` for R rows: per
/// half super-block the codes of four 32-weight groups as bytes (0..63), their pair
/// products with the activations less 32 times the activations' pair sums, times each
/// 16-weight sub-block's scale, summed in `i32`; one multiply-add of `dw * dx` per
/// super-block into eight float lanes.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ6K], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::hsum;
    use std::arch::x86_64::*;
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let m32s = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, wb) in w.iter().enumerate() {
        let dw = wb.d.to_f32();
        let scales = _mm_loadu_si128(wb.scales.as_ptr() as *const __m128i);
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..2 {
            // Sub-blocks 8j..8j + 8, two per 32-weight group, as i16 lanes.
            let scale = |k: usize| {
                let s = 8 * j + 2 * k;
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
                    scales,
                    _mm_set_epi8(
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8 + 1,
                        s as i8,
                        s as i8,
                        s as i8,
                        s as i8,
                        s as i8,
                        s as i8,
                        s as i8,
                        s as i8,
                    ),
                ))
            };
            let sc = [scale(0), scale(1), scale(2), scale(3)];
            let bits1 = _mm256_loadu_si256(wb.ql.as_ptr().add(64 * j) as *const __m256i);
            let bits2 = _mm256_loadu_si256(wb.ql.as_ptr().add(64 * j + 32) as *const __m256i);
            let high = _mm256_loadu_si256(wb.qh.as_ptr().add(32 * j) as *const __m256i);
            let top = |shift: i32| {
                _mm256_slli_epi16(
                    _mm256_and_si256(
                        match shift {
                            0 => high,
                            2 => _mm256_srli_epi16(high, 2),
                            4 => _mm256_srli_epi16(high, 4),
                            _ => _mm256_srli_epi16(high, 6),
                        },
                        m2,
                    ),
                    4,
                )
            };
            // Codes of weights 128j + 32k .. + 32, k = 0..4.
            let q = [
                _mm256_or_si256(_mm256_and_si256(bits1, m4), top(0)),
                _mm256_or_si256(_mm256_and_si256(bits2, m4), top(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4), top(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4), top(6)),
            ];
            for r in 0..R {
                let qs = x[r][b].qs.as_ptr().add(128 * j);
                let p: [__m256i; 4] = std::array::from_fn(|k| {
                    let a = _mm256_loadu_si256(qs.add(32 * k) as *const __m256i);
                    // Pair sums fit i16: 2 * 63 * 127 < 32767.
                    let p16 = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(q[k], a),
                        _mm256_maddubs_epi16(m32s, a),
                    );
                    _mm256_madd_epi16(sc[k], p16)
                });
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p[0], p[1]));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p[2], p[3]));
            }
        }
        for r in 0..R {
            let d = _mm256_set1_ps(x[r][b].d * dw);
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// The browser's kernel (wasm SIMD128): each super-block's codes minus 32 times their
/// sub-block's scale, as `i16` (at most 32 * 128), once for all rows; then `i16` pair
/// dots with the widened activations ([`super::q8_k::Q8KWide`]) into four `i32` lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{Act, BlockQ6K, BLOCK_K};
    use crate::cpu::q4_k::simd128::dot_scaled;
    use crate::cpu::wide::{f16_to_f32_finite, simd};
    use core::arch::wasm32::*;

    /// The codes minus 32 of a super-block times their 16-element scales, as 32 vectors
    /// of eight `i16` in element order, unpacked sixteen at a time. Per half `h` of 128
    /// elements, element `128h + 32g + l` (`g` 0..4, `l` 0..32) has its low four bits in
    /// the low (`g` 0, 1) or high (`g` 2, 3) nibble of `ql[64h + 32 (g % 2) + l]` and its
    /// top two at bits `2g` of `qh[32h + l]`. |code| is at most 32 and |scale| 128, so
    /// each product fits `i16`.
    #[inline]
    fn scaled(wb: &BlockQ6K) -> [v128; BLOCK_K / 8] {
        let (m4, m2, bias) = (u8x16_splat(0x0F), u8x16_splat(3), i8x16_splat(32));
        // SAFETY: 16-byte unaligned loads inside `ql` (128 bytes) and `qh` (64 bytes).
        let load = |p: *const u8| unsafe { v128_load(p as *const v128) };
        let mut out = [i16x8_splat(0); BLOCK_K / 8];
        for h in 0..2 {
            let ql: [v128; 4] = std::array::from_fn(|i| load(wb.ql[64 * h + 16 * i..].as_ptr()));
            let qh: [v128; 2] = std::array::from_fn(|i| load(wb.qh[32 * h + 16 * i..].as_ptr()));
            for g in 0..4 {
                for half in 0..2 {
                    let low = ql[2 * (g % 2) + half];
                    let low = if g < 2 {
                        v128_and(low, m4)
                    } else {
                        u8x16_shr(low, 4)
                    };
                    let top = v128_and(u8x16_shr(qh[half], 2 * g as u32), m2);
                    let codes = i8x16_sub(v128_or(low, i8x16_shl(top, 4)), bias);
                    let first = 128 * h + 32 * g + 16 * half; // element index
                    let s = i16x8_splat(wb.scales[first / 16] as i16);
                    out[first / 8] = i16x8_mul(i16x8_extend_low_i8x16(codes), s);
                    out[first / 8 + 1] = i16x8_mul(i16x8_extend_high_i8x16(codes), s);
                }
            }
        }
        out
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ6K], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        for (b, wb) in w.iter().enumerate() {
            let q = scaled(wb);
            let dw = f16_to_f32_finite(wb.d);
            for r in 0..R {
                let xb = &x[r][b];
                let scale = f32x4_splat(dw * xb.d);
                acc[r] = f32x4_add(
                    acc[r],
                    f32x4_mul(scale, f32x4_convert_i32x4(dot_scaled(&q, xb))),
                );
            }
        }
        std::array::from_fn(|r| simd::hsum(acc[r]))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::dot_rows as dot_rows_simd128;

/// The plain reference implementation (also what targets without SIMD run).
pub fn dot_scalar(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(wb, xb)| {
            let q = wb.codes();
            let sumi: i32 = (0..16)
                .map(|s| {
                    let sub: i32 = (16 * s..16 * s + 16)
                        .map(|i| q[i] as i32 * xb.qs[i] as i32)
                        .sum();
                    wb.scales[s] as i32 * sub
                })
                .sum();
            wb.d.to_f32() * xb.d * sumi as f32
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ROWS;
    use candle_core::quantized::k_quants::{BlockQ6K as CQ6K, BlockQ8K as CQ8K, GgmlType};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn weights(rng: &mut SmallRng, n_blocks: usize, scale: f32) -> Vec<BlockQ6K> {
        let x: Vec<f32> = (0..n_blocks * BLOCK_K)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let mut c = vec![CQ6K::zeros(); n_blocks];
        CQ6K::from_float(&x, &mut c);
        // SAFETY: both are repr(C) { [u8; 128], [u8; 64], [i8; 16], f16 } (sizes below).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const BlockQ6K, n_blocks) }.to_vec()
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

    use crate::cpu::activations::quantize_q8_k;

    #[test]
    fn blocks_are_ggml_sized() {
        assert_eq!(std::mem::size_of::<BlockQ6K>(), std::mem::size_of::<CQ6K>());
        assert_eq!(std::mem::size_of::<BlockQ6K>(), 210);
        assert_eq!(std::mem::size_of::<BlockQ8K>(), std::mem::size_of::<CQ8K>());
    }

    #[test]
    fn codes_are_candles_dequantization() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = weights(&mut rng, 3, 1.0);
        // SAFETY: as in `weights`.
        let c = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ6K, w.len()) };
        let mut want = vec![0f32; w.len() * BLOCK_K];
        CQ6K::to_float(c, &mut want);
        for (b, wb) in w.iter().enumerate() {
            for (i, &q) in wb.codes().iter().enumerate() {
                let got = wb.d.to_f32() * wb.scales[i / 16] as f32 * q as f32;
                assert_eq!(got, want[b * BLOCK_K + i], "block {b} element {i}");
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
            // SAFETY: as in `weights`; Q8_K blocks are candle's layout (sizes above).
            let (cw, cx) = unsafe {
                (
                    std::slice::from_raw_parts(w.as_ptr() as *const CQ6K, n_blocks),
                    std::slice::from_raw_parts(x.as_ptr() as *const CQ8K, n_blocks),
                )
            };
            let theirs = CQ6K::vec_dot(n_blocks * BLOCK_K, cw, cx);
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
        // Codes 0 and 63 (-32 and +31), scales -128 and 127, against -127 and 127.
        let w = vec![
            BlockQ6K {
                ql: std::array::from_fn(|i| if i % 3 == 0 { 0xFF } else { 0 }),
                qh: std::array::from_fn(|i| if i % 2 == 0 { 0xFF } else { 0 }),
                scales: std::array::from_fn(|i| if i % 2 == 0 { 127 } else { -128 }),
                d: f16::ONE,
            };
            2
        ];
        let x = vec![
            BlockQ8K {
                d: 1.0,
                qs: std::array::from_fn(|i| if i % 5 < 2 { -127 } else { 127 }),
                bsums: [0; 16],
            };
            2
        ];
        let mut x = x;
        for b in x.iter_mut() {
            for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
        }
        // Saturated pair sums would be off by thousands; float sums of large integers
        // may round differently per lane.
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
