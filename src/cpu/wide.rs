//! Activations widened to `i16` for the wasm SIMD128 kernels.
//!
//! Wasm SIMD128 has no `u8 x i8` multiply-add (AVX2's `maddubs`), only the `i16`
//! pairwise dot `i32x4.dot_i16x8_s`. An activation row is quantized once per matmul
//! and then read by every weight row (hundreds to 49152 of them), so it pays to widen
//! its quants to `i16` once, in the order the weights' lanes come in, and to convert
//! its f16 scales to f32 once, instead of in every dot product.
//!
//! The quants and scales are ggml's (quantized by [`super::activations`] first), so
//! the kernels compute the same integer sums as the AVX2 and scalar kernels.

use half::f16;

use super::activations::{BlockQ8_0, BlockQ8_1, BLOCK};

/// One Q8_1 block for the Q4_1 kernel: the quants in nibble-lane order, `d` and `s`
/// as f32 (adjacent, so one 64-bit load brings both).
///
/// Read as `u16` lanes, a Q4_1 block's 16 bytes hold in lane `i` (of 8) the elements
/// `2i` (bits 0-3), `2i + 16` (bits 4-7), `2i + 1` (bits 8-11) and `2i + 17`
/// (bits 12-15), so `qs[v * 8 + i]` is the activation of element [`NIBBLE_LANES`]`[v](i)`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8_1Wide {
    pub qs: [i16; BLOCK],
    pub d: f32,
    pub s: f32,
}

/// The element each `i16` lane of vector `v` of [`Q8_1Wide::qs`] holds.
pub const NIBBLE_LANES: [fn(usize) -> usize; 4] =
    [|i| 2 * i, |i| 2 * i + 16, |i| 2 * i + 1, |i| 2 * i + 17];

impl Q8_1Wide {
    pub const ZERO: Self = Q8_1Wide {
        qs: [0; BLOCK],
        d: 0.0,
        s: 0.0,
    };

    pub fn new(b: &BlockQ8_1) -> Self {
        let mut qs = [0i16; BLOCK];
        for (v, element) in NIBBLE_LANES.iter().enumerate() {
            for i in 0..8 {
                qs[v * 8 + i] = b.qs[element(i)] as i16;
            }
        }
        Q8_1Wide {
            qs,
            d: f16_to_f32_finite(b.d),
            s: f16_to_f32_finite(b.s),
        }
    }
}

/// One Q8_0 block for the Q8_0 kernel: the quants in order, `d` as f32.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8_0Wide {
    pub qs: [i16; BLOCK],
    pub d: f32,
}

impl Q8_0Wide {
    pub const ZERO: Self = Q8_0Wide {
        qs: [0; BLOCK],
        d: 0.0,
    };

    pub fn new(b: &BlockQ8_0) -> Self {
        Q8_0Wide {
            qs: b.qs.map(i16::from),
            d: f16_to_f32_finite(b.d),
        }
    }
}

/// 2^112: an f16's exponent bias (15) moved to an f32's (127).
const TWO_POW_112: f32 = f32::from_bits(0x7780_0000);

/// An f16 scale as f32 without branches: exponent and mantissa moved into an f32 and
/// rescaled by 2^112, which is exact for normal and subnormal values alike (scales are
/// finite; an inf or NaN would come out finite). Without F16C, `half`'s conversion
/// branches on the value class, which costs more than a block's SIMD arithmetic.
#[inline]
pub fn f16_to_f32_finite(h: f16) -> f32 {
    let h = h.to_bits() as u32;
    let magnitude = f32::from_bits((h & 0x7FFF) << 13) * TWO_POW_112;
    f32::from_bits(magnitude.to_bits() | ((h & 0x8000) << 16))
}

/// The wasm SIMD128 building blocks the Q4_1 and Q8_0 kernels share.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod simd {
    use core::arch::wasm32::*;

    /// Horizontal sum of 4 lanes.
    #[inline]
    pub fn hsum(a: v128) -> f32 {
        f32x4_extract_lane::<0>(a)
            + f32x4_extract_lane::<1>(a)
            + f32x4_extract_lane::<2>(a)
            + f32x4_extract_lane::<3>(a)
    }

    /// Four f16 values, one in the low half of each `u32` lane, as f32 (as
    /// [`super::f16_to_f32_finite`] does one).
    #[inline]
    pub fn f16x4_to_f32x4(h: v128) -> v128 {
        let magnitude = f32x4_mul(
            v128_and(i32x4_shl(h, 13), u32x4_splat(0x7FFF << 13)),
            f32x4_splat(super::TWO_POW_112),
        );
        v128_or(magnitude, i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16))
    }

    /// `sum_j w[j] * x[j]` of 32 `i16` pairs (four vectors each) as four `i32` lanes.
    #[inline]
    pub fn dot32(w: [v128; 4], x: &[i16; 32]) -> v128 {
        let p = x.as_ptr() as *const v128;
        // SAFETY: `x` is 64 bytes: four unaligned 16-byte loads.
        let x: [v128; 4] = std::array::from_fn(|v| unsafe { v128_load(p.add(v)) });
        i32x4_add(
            i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1])),
            i32x4_add(i32x4_dot_i16x8(w[2], x[2]), i32x4_dot_i16x8(w[3], x[3])),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::activations::{quantize_converted, quantize_q8_0, quantize_q8_1};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    #[test]
    fn branch_free_f16_conversion_is_exact_for_every_finite_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                let (got, want) = (f16_to_f32_finite(h), h.to_f32());
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{bits:#06x}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn nibble_lanes_name_each_element_once_as_a_q4_1_block_packs_them() {
        // Byte j of a Q4_1 block: element j in its low nibble, j + 16 in its high one.
        let packed: [u8; 16] = std::array::from_fn(|j| (j as u8) | ((j as u8 + 16) << 4));
        let mut seen = [false; BLOCK];
        for (v, element) in NIBBLE_LANES.iter().enumerate() {
            for i in 0..8 {
                let lane = u16::from_le_bytes([packed[2 * i], packed[2 * i + 1]]);
                // Nibble v of lane i holds element (nibble value) `element(i)`, mod 16.
                let nibble = (lane >> (4 * v)) & 0xF;
                assert_eq!(nibble as usize, element(i) % 16, "vector {v} lane {i}");
                assert!(!seen[element(i)]);
                seen[element(i)] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn widened_blocks_keep_ggml_quants_and_scales() {
        let mut rng = SmallRng::seed_from_u64(1);
        let x: Vec<f32> = (0..2 * BLOCK)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let mut q1 = [BlockQ8_1::ZERO; 2];
        quantize_q8_1(&x, &mut q1);
        let mut w1 = [Q8_1Wide::ZERO; 2];
        quantize_converted(&x, &mut w1, BlockQ8_1::ZERO, quantize_q8_1, Q8_1Wide::new);
        for (w1, q1) in w1.iter().zip(&q1) {
            assert_eq!((w1.d, w1.s), (q1.d.to_f32(), q1.s.to_f32()));
            for (v, element) in NIBBLE_LANES.iter().enumerate() {
                for i in 0..8 {
                    assert_eq!(w1.qs[v * 8 + i], q1.qs[element(i)] as i16);
                }
            }
        }
        let mut q0 = [BlockQ8_0::ZERO; 2];
        quantize_q8_0(&x, &mut q0);
        let mut w0 = [Q8_0Wide::ZERO; 2];
        quantize_converted(&x, &mut w0, BlockQ8_0::ZERO, quantize_q8_0, Q8_0Wide::new);
        for (w0, q0) in w0.iter().zip(&q0) {
            assert_eq!(w0.d, q0.d.to_f32());
            assert!(w0.qs.iter().zip(&q0.qs).all(|(&a, &b)| a == b as i16));
        }
    }
}
