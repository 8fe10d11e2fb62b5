//! Small helpers the x86-64 kernels (AVX2 and FMA) share.

use std::arch::x86_64::*;

/// Eight i32 lanes, lane `i` the sum of the products of bytes `4i..4i + 4` of `u`
/// (unsigned) and `s` (signed). Pairs are summed in i16 first: exact while a pair's sum
/// fits (`|u| * |s| * 2 <= 32767`, which the callers' quants guarantee).
///
/// (VNNI's `vpdpbusd` does this in one instruction. Measured on this project's Xeon VM,
/// it decoded no faster than these two: 41.9 vs 42.4 tok/s, medians of 5.)
#[inline(always)]
pub unsafe fn sum_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Horizontal sum of 8 lanes.
#[inline(always)]
pub unsafe fn hsum(acc: __m256) -> f32 {
    let hi = _mm256_extractf128_ps(acc, 1);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    _mm_cvtss_f32(s1)
}

/// Two adjacent f16 values (at `p`) as lanes 0 and 1 of an f32 vector, in one conversion.
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline(always)]
pub unsafe fn two_f16(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)))
}

/// Two adjacent f32 values (at `p`) as lanes 0 and 1, in one load.
///
/// # Safety
/// `p` must point to 8 readable bytes.
#[inline(always)]
pub unsafe fn two_f32(p: *const f32) -> __m128 {
    _mm_castpd_ps(_mm_load_sd(p as *const f64))
}

/// The 32 bits at `p` (little-endian) as 32 bytes, byte `j` 0xFF where bit `j` is set
/// and 0 where not (ggml's `bytes_from_bits_32`).
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline(always)]
pub unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let bits = std::ptr::read_unaligned(p as *const i32);
    // Byte j of the result starts as byte j / 8 of the bits.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        ),
    );
    // All ones but bit j % 8: all ones together exactly where that bit is set.
    let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1))
}

/// `sum(a[i] * b[i])` over the shorter slice, exactly as ggml's `ggml_vec_dot_f32` with
/// AVX2 computes it: four registers of eight fused multiply-add lanes, reduced as
/// (x0 + x2) + (x1 + x3), the two halves added, two horizontal adds; then the tail.
/// (`ops::dot` is the same order written lane by lane, for other targets.)
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n / 32 * 32;
    // SAFETY: the loads read a[i..i + 32] and b[i..i + 32] for i + 32 <= whole <= n.
    let mut sum = unsafe {
        let mut x = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(32) {
            for (k, acc) in x.iter_mut().enumerate() {
                let (pa, pb) = (a.as_ptr().add(i + 8 * k), b.as_ptr().add(i + 8 * k));
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), *acc);
            }
        }
        let x0 = _mm256_add_ps(_mm256_add_ps(x[0], x[2]), _mm256_add_ps(x[1], x[3]));
        let t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps(x0, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    };
    for (x, y) in a[whole..n].iter().zip(&b[whole..n]) {
        sum += x * y;
    }
    sum
}
