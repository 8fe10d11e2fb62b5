//! Activations with f32 scales for the AVX2 kernels.
//!
//! ggml's Q8_1 and Q8_0 blocks keep their scales as f16. A matmul quantizes an
//! activation row once and then every weight row reads it (hundreds to 49152 of them),
//! so converting its scales to f32 once, here, saves two f16 conversions per block and
//! activation row in the kernels' inner loop, where each costs a multiply-port uop.
//! The quants and the scales' values are ggml's (f16 to f32 is exact), so the sums are
//! the same as with ggml's blocks.

use super::activations::{BlockQ8_0, BlockQ8_1, BLOCK};

/// One Q8_1 block with `d` and `s` as f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8_1Scaled {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; BLOCK],
}

impl Q8_1Scaled {
    pub const ZERO: Self = Q8_1Scaled {
        d: 0.0,
        s: 0.0,
        qs: [0; BLOCK],
    };

    pub fn new(b: &BlockQ8_1) -> Self {
        Q8_1Scaled {
            d: b.d.to_f32(),
            s: b.s.to_f32(),
            qs: b.qs,
        }
    }
}

/// One Q8_0 block with `d` as f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8_0Scaled {
    pub d: f32,
    pub qs: [i8; BLOCK],
}

impl Q8_0Scaled {
    pub const ZERO: Self = Q8_0Scaled {
        d: 0.0,
        qs: [0; BLOCK],
    };

    pub fn new(b: &BlockQ8_0) -> Self {
        Q8_0Scaled {
            d: b.d.to_f32(),
            qs: b.qs,
        }
    }
}
