//! Activation formats of ggml's quantized matmuls and their quantizers, rounding
//! exactly as ggml does (candle's own quantizers round differently, which moves
//! logits away from llama.cpp's):
//! - Q8_0 (34 bytes / 32 values): `x ~= d * qs`, `d = amax / 127` as f16; for Q4_0,
//!   Q5_0 and Q8_0 weights.
//! - Q8_1 (36 bytes / 32 values): Q8_0 plus `s = d * sum(qs)`; for Q4_1 and Q5_1.
//! - Q8_K (292 bytes / 256 values): `d = max / -127` in f32 plus sums of each 16
//!   quants; for the K-quants.

use half::f16;

/// Values per Q8_0 / Q8_1 block.
pub const BLOCK: usize = 32;
/// Values per Q8_K block.
pub const BLOCK_K: usize = 256;
/// Scale numerator of Q8_K quantization.
const Q8K_RANGE: f32 = -127.0;

/// One Q8_1 block, byte-identical to ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

impl BlockQ8_1 {
    pub const ZERO: Self = BlockQ8_1 {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; 32],
    };
}

/// One Q8_0 block, byte-identical to ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

impl BlockQ8_0 {
    pub const ZERO: Self = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; 32],
    };
}

/// Quantizes `x` block by block with ggml's `quantize` (into `zero`-initialized
/// blocks), then converts each block into the kernels' layout with `convert`.
pub fn quantize_converted<B: Copy, A>(
    x: &[f32],
    out: &mut [A],
    zero: B,
    quantize: impl Fn(&[f32], &mut [B]),
    convert: impl Fn(&B) -> A,
) {
    let mut q = [zero];
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        quantize(xb, &mut q);
        *ob = convert(&q[0]);
    }
}

/// `amax / 127` and its inverse as ggml computes them.
#[inline]
fn q8_scale(xb: &[f32]) -> (f32, f32) {
    let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, id)
}

/// Quantizes `x` into Q8_0 blocks as ggml's `quantize_row_q8_0` does.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let (d, id) = q8_scale(xb);
        for (q, &v) in ob.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
        ob.d = f16::from_f32(d);
    }
}

/// One Q8_K block (256 activations), byte-identical to ggml's `block_q8_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    /// Sums of each 16 quants.
    pub bsums: [i16; 16],
}

/// ggml's `nearest_int`: round to nearest, ties to even.
#[inline]
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// Quantizes `x` into Q8_K blocks as ggml's `quantize_row_q8_K_ref` does.
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, ob) in x.chunks_exact(BLOCK_K).zip(out.iter_mut()) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            ob.d = 0.0;
            ob.qs = [0; 256];
            ob.bsums = [0; 16];
            continue;
        }
        let iscale = Q8K_RANGE / max;
        for (q, &v) in ob.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in ob.bsums.iter_mut().zip(ob.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        ob.d = 1.0 / iscale;
    }
}

/// Quantizes `x` (a multiple of 32 values) into `out` (one block per 32 values), the
/// way ggml's `quantize_row_q8_1` does.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * BLOCK);
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let (d, id) = q8_scale(xb);
        let mut sum = 0i32;
        for (q, &v) in ob.qs.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        ob.d = f16::from_f32(d);
        ob.s = f16::from_f32(d * sum as f32);
    }
}
