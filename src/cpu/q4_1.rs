//! Q4_1 weights times Q8_1-quantized activations, as ggml defines them.
//!
//! Q4_1 block (20 bytes, 32 weights): `w[j] = d * q[j] + m`, with `q` in 0..16 stored
//! as nibbles: the low nibble of `qs[j]` is element `j`, the high nibble element `j + 16`.
//! With Q8_1 activations (`x[j] ~= dx * qs[j]`, `s = dx * sum(qs)`):
//! `dot(w, x) = dw * dx * sum(q * qs) + m * s`.

use half::f16;

pub use super::activations::{quantize_q8_1, BlockQ8_1, BLOCK};

/// One Q4_1 block, byte-identical to ggml's `block_q4_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// Dequantizes Q4_1 blocks into `out` (32 values per block).
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..16 {
            o[j] = d * (b.qs[j] & 0x0F) as f32 + m;
            o[j + 16] = d * (b.qs[j] >> 4) as f32 + m;
        }
    }
}

pub use super::ROWS;

activation_format!(
    BlockQ8_1,
    super::wide::Q8_1Wide,
    super::scaled::Q8_1Scaled,
    quantize_q8_1
);

dot_kernels!(BlockQ4_1, Act);

/// The browser's CPU kernels (wasm SIMD128, which browsers run as SSE or NEON). Each
/// weight block is read as eight `u16` lanes of four nibbles, which shifts and masks
/// split into four `i16` vectors; the activations come widened in the same lane order
/// ([`super::wide::Q8_1Wide`]), so four `i32x4.dot_i16x8_s` give the block's integer
/// sum. The block's `d` and `m` are converted together and multiplied by the
/// activation's f32 `d` and `s` in one vector: `[dw * dx, m * s, _, _]`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{Act, BlockQ4_1};
    use crate::cpu::wide::simd::{dot32, f16x4_to_f32x4, hsum};
    use core::arch::wasm32::*;

    /// A block's 32 nibbles as four `i16` vectors in [`crate::cpu::wide::NIBBLE_LANES`] order.
    #[inline]
    fn nibbles(wb: &BlockQ4_1) -> [v128; 4] {
        let nibble = u16x8_splat(0x000F);
        // SAFETY: `qs` is 16 bytes; the load is unaligned.
        let packed = unsafe { v128_load(wb.qs.as_ptr() as *const v128) };
        [
            v128_and(packed, nibble),
            v128_and(u16x8_shr(packed, 4), nibble),
            v128_and(u16x8_shr(packed, 8), nibble),
            u16x8_shr(packed, 12),
        ]
    }

    /// A block's `d` and `m` as the u16 lanes 0 and 1 of a vector.
    #[inline]
    fn scales(wb: &BlockQ4_1) -> v128 {
        // SAFETY: `d` and `m` are the block's first 4 bytes; the load is unaligned.
        unsafe { v128_load32_zero(wb as *const BlockQ4_1 as *const u32) }
    }

    /// The activation block's `[d, s, 0, 0]` (adjacent f32s).
    #[inline]
    fn act_scales(xb: &Act) -> v128 {
        // SAFETY: `d` and `s` are adjacent f32s: one unaligned 8-byte load.
        unsafe { v128_load64_zero(&xb.d as *const f32 as *const u64) }
    }

    #[inline]
    pub fn dot_rows<const R: usize>(w: &[BlockQ4_1], x: [&[Act]; R]) -> [f32; R] {
        let mut acc = [f32x4_splat(0.0); R]; // sums of dw * dx * sum(q * qs), by lane
        let mut acc_m = [f32x4_splat(0.0); R]; // lane 1: sum of m * s
        for (b, wb) in w.iter().enumerate() {
            let q = nibbles(wb);
            let dm = f16x4_to_f32x4(u32x4_extend_low_u16x8(scales(wb))); // [dw, m, 0, 0]
            for r in 0..R {
                let xb = &x[r][b];
                let s = f32x4_mul(dm, act_scales(xb)); // [dw * dx, m * s, 0, 0]
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

/// The x86 kernel (AVX2 and FMA). Per block: the weight's `[dw, m]` in one f16
/// conversion, times each activation's `[dx, s]` in one multiply (`[dw * dx, m * s]`),
/// whose lane 1 accumulates the offset term and whose lane 0 scales the integer sum
/// (measured: decodes 15% faster than converting and multiplying them one by one).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn dot_rows_x86<const R: usize>(w: &[BlockQ4_1], x: [&[Act]; R]) -> [f32; R] {
    use super::x86::{hsum, sum_u8_i8, two_f16, two_f32};
    use std::arch::x86_64::*;
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R]; // sums of dw * dx * sum(q * qs), by lane
    let mut acc_m = [_mm_setzero_ps(); R]; // lane 1: sum of m * s
    for (b, wb) in w.iter().enumerate() {
        // [dw, m, 0, 0]
        let dm = two_f16(wb as *const BlockQ4_1 as *const u8);
        // 32 unsigned nibbles: elements 0..16 in the low lane, 16..32 in the high lane.
        let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
        let q = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            low_nibbles,
        );
        for r in 0..R {
            let xb = &x[r][b];
            let s = _mm_mul_ps(dm, two_f32(&xb.d)); // [dw * dx, m * s, 0, 0]
            acc_m[r] = _mm_add_ps(acc_m[r], s);
            let a = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            // Pair sums fit i16: 15 * 127 * 2 < 32767.
            let sums = _mm256_cvtepi32_ps(sum_u8_i8(q, a));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), sums, acc[r]);
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(acc_m[r])))
}

/// The plain reference implementation (also what non-AVX2 targets run).
pub fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (wb, xb) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (wb.qs[j] & 0x0F) as i32 * xb.qs[j] as i32;
            sumi += (wb.qs[j] >> 4) as i32 * xb.qs[j + 16] as i32;
        }
        sum += wb.d.to_f32() * xb.d.to_f32() * sumi as f32 + wb.m.to_f32() * xb.s.to_f32();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// ggml's blocks in the kernels' layout.
    fn acts(q: &[BlockQ8_1]) -> Vec<Act> {
        q.iter().map(to_act).collect()
    }

    fn random_blocks(rng: &mut SmallRng, n: usize) -> Vec<BlockQ4_1> {
        (0..n)
            .map(|_| BlockQ4_1 {
                d: f16::from_f32(rng.random_range(0.001..0.05)),
                m: f16::from_f32(rng.random_range(-0.2..0.0)),
                qs: std::array::from_fn(|_| rng.random()),
            })
            .collect()
    }

    #[test]
    fn simd_dot_matches_scalar_reference() {
        let mut rng = SmallRng::seed_from_u64(7);
        for n_blocks in [1, 2, 18, 48] {
            let w = random_blocks(&mut rng, n_blocks);
            let x: Vec<f32> = (0..n_blocks * BLOCK)
                .map(|_| rng.random_range(-3.0..3.0))
                .collect();
            let mut q = vec![BlockQ8_1::ZERO; n_blocks];
            quantize_q8_1(&x, &mut q);
            let (fast, slow) = (dot(&w, &acts(&q)), dot_scalar(&w, &q));
            assert!(
                (fast - slow).abs() <= 1e-4 * slow.abs().max(1.0),
                "{n_blocks} blocks: simd {fast} vs scalar {slow}"
            );
        }
    }

    #[test]
    fn dot4_is_bit_identical_to_four_dots() {
        let mut rng = SmallRng::seed_from_u64(5);
        let w = random_blocks(&mut rng, 18);
        let rows: Vec<Vec<Act>> = (0..ROWS)
            .map(|_| {
                let x: Vec<f32> = (0..18 * BLOCK)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let mut q = vec![Act::ZERO; 18];
                quantize(&x, &mut q);
                q
            })
            .collect();
        let four = dot4(&w, std::array::from_fn(|r| rows[r].as_slice()));
        for r in 0..ROWS {
            assert_eq!(four[r].to_bits(), dot(&w, &rows[r]).to_bits(), "row {r}");
        }
    }

    #[test]
    fn quantized_dot_is_close_to_exact_float_dot() {
        let mut rng = SmallRng::seed_from_u64(11);
        let n_blocks = 18;
        let w = random_blocks(&mut rng, n_blocks);
        let x: Vec<f32> = (0..n_blocks * BLOCK)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut wf = vec![0f32; x.len()];
        dequantize(&w, &mut wf);
        let exact: f32 = wf.iter().zip(&x).map(|(a, b)| a * b).sum();
        let mut q = vec![Act::ZERO; n_blocks];
        quantize(&x, &mut q);
        let got = dot(&w, &q);
        // Q8 activations carry ~0.4% relative error per element; summed over 576
        // terms the dot is well within 2% of the float result here.
        assert!(
            (got - exact).abs() <= 0.02 * exact.abs().max(0.5),
            "{got} vs {exact}"
        );
    }

    #[test]
    fn matches_candle_scalar_q4_1() {
        use candle_core::quantized::k_quants::{BlockQ4_1 as CQ4_1, BlockQ8_1 as CQ8_1, GgmlType};
        assert_eq!(
            std::mem::size_of::<CQ4_1>(),
            std::mem::size_of::<BlockQ4_1>()
        );
        assert_eq!(
            std::mem::size_of::<CQ8_1>(),
            std::mem::size_of::<BlockQ8_1>()
        );
        assert_eq!(
            std::mem::size_of::<candle_core::quantized::k_quants::BlockQ8_0>(),
            std::mem::size_of::<crate::cpu::activations::BlockQ8_0>()
        );
        let mut rng = SmallRng::seed_from_u64(3);
        let w = random_blocks(&mut rng, 18);
        let x: Vec<f32> = (0..18 * BLOCK)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let mut ours = vec![BlockQ8_1::ZERO; 18];
        quantize_q8_1(&x, &mut ours);
        // SAFETY: both are repr(C) with identical field layout (asserted sizes above).
        let cw: &[CQ4_1] = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const CQ4_1, 18) };
        let cx: &[CQ8_1] = unsafe { std::slice::from_raw_parts(ours.as_ptr() as *const CQ8_1, 18) };
        let theirs = CQ4_1::vec_dot_unopt(18 * BLOCK, cw, cx);
        let got = dot(&w, &acts(&ours));
        assert!(
            (got - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
            "{got} vs candle {theirs}"
        );
    }
}
