//! The activation format of the K-quant kernels (q4_k, q5_k, q6_k): ggml's Q8_K, 256
//! activations to one f32 scale, with the sums of each 16 quants.
//!
//! With AVX2 the kernels read ggml's block as it is (its scale is already f32). The
//! wasm SIMD128 kernels dot `i16` pairs, so there an activation row is widened to `i16`
//! once per matmul ([`Q8KWide`]) instead of in every dot product.

pub use super::activations::{quantize_q8_k, BlockQ8K, BLOCK_K};

/// One Q8_K block with its quants widened to `i16` (wasm SIMD128).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8KWide {
    pub qs: [i16; BLOCK_K],
    pub bsums: [i16; 16],
    pub d: f32,
}

impl Q8KWide {
    pub const ZERO: Self = Q8KWide {
        qs: [0; BLOCK_K],
        bsums: [0; 16],
        d: 0.0,
    };

    pub fn new(b: &BlockQ8K) -> Self {
        Q8KWide {
            qs: b.qs.map(i16::from),
            bsums: b.bsums,
            d: b.d,
        }
    }
}

impl BlockQ8K {
    pub const ZERO: Self = BlockQ8K {
        d: 0.0,
        qs: [0; BLOCK_K],
        bsums: [0; 16],
    };
}

/// What the K-quant kernels read for one block of 256 activations.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type Act = Q8KWide;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type Act = BlockQ8K;

/// ggml's block as [`Act`].
#[inline]
pub fn to_act(b: &BlockQ8K) -> Act {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        Q8KWide::new(b)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        *b
    }
}

/// The zero [`Act`] (to size buffers).
pub const ZERO: Act = {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        Q8KWide::ZERO
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        BlockQ8K::ZERO
    }
};

/// Quantizes `x` (a multiple of 256 values) into [`Act`] blocks with ggml's rounding.
pub fn quantize(x: &[f32], out: &mut [Act]) {
    let mut q = [BlockQ8K::ZERO];
    for (xb, ob) in x.chunks_exact(BLOCK_K).zip(out.iter_mut()) {
        quantize_q8_k(xb, &mut q);
        *ob = to_act(&q[0]);
    }
}

/// The 12 bytes of Q4_K and Q5_K sub-block scales and mins as eight 6-bit scales and
/// eight 6-bit mins (ggml's `get_scale_min_k4`, all eight at once as ggml's AVX2
/// kernels unpack them).
#[inline]
pub fn scales_and_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = packed[j] & 63;
        mins[j] = packed[j + 4] & 63;
        scales[j + 4] = (packed[j + 8] & 0xF) | ((packed[j] >> 6) << 4);
        mins[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (scales, mins)
}
