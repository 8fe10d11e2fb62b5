//! Q8_0 weights times Q8_0-quantized activations, as ggml defines them: the default
//! model's token embedding, which is also its output head (tied), so every decode step
//! runs it over the whole vocabulary.
//!
//! Q8_0 block (34 bytes, 32 values): `x[j] = d * qs[j]`, `qs` in -127..=127.
//! `dot(w, x) = dw * dx * sum(qw * qx)`.
//!
//! candle has Q8_0 dot products too, but one activation row at a time: with several
//! candidates decoding together, [`dot4`] reads each row of the 30 MB head once for four
//! of them.

pub use super::activations::{quantize_q8_0, BlockQ8_0, BLOCK};

activation_format!(
    BlockQ8_0,
    super::wide::Q8_0Wide,
    super::scaled::Q8_0Scaled,
    quantize_q8_0
);

dot_kernels!(BlockQ8_0, Act);

/// The x86 kernel (AVX2 and FMA).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ8_0], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::{hsum, sum_u8_i8};
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, wb) in w.iter().enumerate() {
        let dw = wb.d.to_f32();
        let q = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
        // The sums multiply unsigned by signed: |w| times x with w's sign moved onto x.
        let q_abs = _mm256_sign_epi8(q, q);
        for r in 0..R {
            let xb = &x[r][b];
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // Pair sums fit i16 (at most 2 * 127 * 127 < 32767: quants
            // are -127..=127, as ggml's quantizer writes them).
            let sums = _mm256_cvtepi32_ps(sum_u8_i8(q_abs, _mm256_sign_epi8(a, q)));
            let scale = _mm256_set1_ps(dw * xb.d);
            acc[r] = _mm256_fmadd_ps(scale, sums, acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// The browser's kernels (wasm SIMD128): each weight block's quants widened to `i16`
/// once, then pairwise dot products with the activations, which come widened
/// ([`super::wide::Q8_0Wide`]), into four `i32` lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{Act, BlockQ8_0};
    use crate::cpu::wide::{f16_to_f32_finite, simd};
    use core::arch::wasm32::*;

    /// A block's 32 quants as four `i16` vectors.
    #[inline]
    fn widened(wb: &BlockQ8_0) -> [v128; 4] {
        // SAFETY: `qs` is 32 bytes: two unaligned 16-byte loads.
        let (q0, q1) = unsafe {
            let p = wb.qs.as_ptr() as *const v128;
            (v128_load(p), v128_load(p.add(1)))
        };
        [
            i16x8_extend_low_i8x16(q0),
            i16x8_extend_high_i8x16(q0),
            i16x8_extend_low_i8x16(q1),
            i16x8_extend_high_i8x16(q1),
        ]
    }

    /// `acc += dw * dx * sums`, lane by lane.
    #[inline]
    fn accumulate(acc: v128, wb: &BlockQ8_0, xb: &Act, sums: v128) -> v128 {
        let scale = f32x4_splat(f16_to_f32_finite(wb.d) * xb.d);
        f32x4_add(acc, f32x4_mul(scale, f32x4_convert_i32x4(sums)))
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ8_0], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R];
        for (b, wb) in w.iter().enumerate() {
            let q = widened(wb);
            for r in 0..R {
                let xb = &x[r][b];
                acc[r] = accumulate(acc[r], wb, xb, simd::dot32(q, &xb.qs));
            }
        }
        std::array::from_fn(|r| simd::hsum(acc[r]))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::dot_rows as dot_rows_simd128;

/// The plain reference implementation (also what targets without SIMD run).
pub fn dot_scalar(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(wb, xb)| {
            let sumi: i32 = wb
                .qs
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
    use crate::cpu::ROWS;
    use half::f16;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// ggml's blocks in the kernels' layout.
    fn acts(q: &[BlockQ8_0]) -> Vec<Act> {
        q.iter().map(to_act).collect()
    }

    fn quantized(rng: &mut SmallRng, n_blocks: usize, range: f32) -> Vec<BlockQ8_0> {
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-range..range))
            .collect();
        let mut q = vec![BlockQ8_0::ZERO; n_blocks];
        quantize_q8_0(&x, &mut q);
        q
    }

    #[test]
    fn simd_dot_matches_scalar_reference() {
        let mut rng = SmallRng::seed_from_u64(9);
        for n_blocks in [1, 2, 18, 48] {
            let w = quantized(&mut rng, n_blocks, 0.1);
            let x = quantized(&mut rng, n_blocks, 3.0);
            let (fast, slow) = (dot(&w, &acts(&x)), dot_scalar(&w, &x));
            assert!(
                (fast - slow).abs() <= 1e-4 * slow.abs().max(1.0),
                "{n_blocks} blocks: simd {fast} vs scalar {slow}"
            );
        }
    }

    #[test]
    fn extreme_quants_do_not_overflow() {
        // Two products of 127 * 127 fill an i16 pair sum almost to the top (32258).
        let w = vec![
            BlockQ8_0 {
                d: f16::ONE,
                qs: std::array::from_fn(|j| if j % 2 == 0 { 127 } else { -127 })
            };
            4
        ];
        let x = vec![
            BlockQ8_0 {
                d: f16::ONE,
                qs: std::array::from_fn(|j| if j % 2 == 0 { 127 } else { -127 })
            };
            4
        ];
        let want = 4.0 * 32.0 * 127.0 * 127.0;
        assert_eq!(dot(&w, &acts(&x)), want);
        assert_eq!(dot_scalar(&w, &x), want);
    }

    #[test]
    fn dot4_is_bit_identical_to_four_dots() {
        let mut rng = SmallRng::seed_from_u64(4);
        let w = quantized(&mut rng, 18, 0.1);
        let rows: Vec<Vec<Act>> = (0..ROWS)
            .map(|_| acts(&quantized(&mut rng, 18, 2.0)))
            .collect();
        let four = dot4(&w, std::array::from_fn(|r| rows[r].as_slice()));
        for r in 0..ROWS {
            assert_eq!(four[r].to_bits(), dot(&w, &rows[r]).to_bits(), "row {r}");
        }
    }

    #[test]
    fn matches_candle_q8_0() {
        use candle_core::quantized::k_quants::{BlockQ8_0 as CQ8_0, GgmlType};
        let mut rng = SmallRng::seed_from_u64(8);
        let w = quantized(&mut rng, 18, 0.1);
        let x = quantized(&mut rng, 18, 2.0);
        // SAFETY: both are repr(C) { f16, [i8; 32] } (sizes checked in q4_1's tests).
        let view = |b: &[BlockQ8_0]| unsafe {
            std::slice::from_raw_parts(b.as_ptr() as *const CQ8_0, b.len())
        };
        let theirs = CQ8_0::vec_dot(18 * BLOCK, view(&w), view(&x));
        let got = dot(&w, &acts(&x));
        assert!(
            (got - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
            "{got} vs candle {theirs}"
        );
    }
}
