//! GGUF blocks into the GPU's 4-byte-aligned layout (described in kernels/quant.wgsl):
//! a matrix is a row-major run of units of 32 weights; 4-bit nibbles and scales live in
//! separate word arrays. Pure functions, tested against the CPU dequantization.

use std::ops::Range;

use half::{bf16, f16};

use crate::cpu::Matrix;
use crate::error::{Error, Result};
use crate::gguf::TensorType;

/// Weights per unit.
pub const UNIT: usize = 32;

/// How a matrix is stored on the GPU: the `FORMAT` override constant of quant.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    /// Q4_0 and Q4_1: one `(d, m)` f16 pair per unit.
    Q4 = 3,
    /// Q4_K: ggml's super-block scales, nibbles as [`Format::Q4`].
    Q4K = 4,
}

impl Format {
    /// The GPU format of a GGUF tensor type, or a clear refusal.
    pub fn of(ttype: TensorType, name: &str) -> Result<Format> {
        Ok(match ttype {
            TensorType::F32 | TensorType::BF16 => Format::F32,
            TensorType::F16 => Format::F16,
            TensorType::Q8_0 => Format::Q8_0,
            TensorType::Q4_0 | TensorType::Q4_1 => Format::Q4,
            TensorType::Q4K => Format::Q4K,
            other => {
                return Err(Error::UnsupportedConfig(format!(
                    "tensor `{name}` is stored as {other}, which the GPU backend does not run; \
                     it runs F32, F16, BF16, Q8_0, Q4_0, Q4_1 and Q4_K (use the CPU backend \
                     for this model)"
                )))
            }
        })
    }

    /// Words of `scales` per row of `units` units (Q4_K: four per 8 units).
    pub fn scale_words(self, units: usize) -> usize {
        match self {
            Format::F32 | Format::F16 => 0,
            Format::Q8_0 | Format::Q4 => units,
            Format::Q4K => units / 2,
        }
    }

    /// Words of `quants` per unit.
    pub fn quant_words(self) -> usize {
        match self {
            Format::F32 => 32,
            Format::F16 => 16,
            Format::Q8_0 => 8,
            Format::Q4 | Format::Q4K => 4,
        }
    }
}

/// Rows of a matrix in GPU layout.
pub struct Repacked {
    pub format: Format,
    /// (units, quant_words)
    pub quants: Vec<u32>,
    /// Q8_0 / Q4: one word per unit; Q4_K: four per 8 units; F32 / F16: empty.
    pub scales: Vec<u32>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn word_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Repacks rows `rows` of `m`.
pub fn repack(m: &Matrix, rows: Range<usize>, name: &str) -> Result<Repacked> {
    let format = Format::of(m.ttype, name)?;
    let block_len = m.ttype.block_len() as usize;
    let block_bytes = m.ttype.block_bytes() as usize;
    let row_bytes = m.cols / block_len * block_bytes;
    let raw = &m.raw_bytes()[rows.start * row_bytes..rows.end * row_bytes];
    let n_blocks = raw.len() / block_bytes;
    let mut quants = Vec::with_capacity(rows.len() * m.cols / UNIT * format.quant_words());
    let mut scales = Vec::new();
    match m.ttype {
        TensorType::F32 => quants.extend(raw.chunks_exact(4).map(|c| word_at(c, 0))),
        TensorType::F16 => quants.extend(raw.chunks_exact(4).map(|c| word_at(c, 0))),
        TensorType::BF16 => quants.extend(
            raw.chunks_exact(2)
                .map(|c| bf16::from_bits(u16_at(c, 0)).to_f32().to_bits()),
        ),
        TensorType::Q8_0 => {
            // block_q8_0: d (f16), qs[32] (i8).
            for b in raw.chunks_exact(block_bytes) {
                scales.push(u16_at(b, 0) as u32);
                quants.extend((0..8).map(|i| word_at(b, 2 + 4 * i)));
            }
        }
        TensorType::Q4_0 => {
            // block_q4_0: d (f16), qs[16]; w = d * (q - 8) = d * q + (-8 d).
            for b in raw.chunks_exact(block_bytes) {
                let d = f16::from_bits(u16_at(b, 0));
                let m = f16::from_f32(-8.0 * d.to_f32());
                scales.push(d.to_bits() as u32 | (m.to_bits() as u32) << 16);
                quants.extend((0..4).map(|i| word_at(b, 2 + 4 * i)));
            }
        }
        TensorType::Q4_1 => {
            // block_q4_1: d (f16), m (f16), qs[16]; w = d * q + m.
            for b in raw.chunks_exact(block_bytes) {
                scales.push(word_at(b, 0));
                quants.extend((0..4).map(|i| word_at(b, 4 + 4 * i)));
            }
        }
        TensorType::Q4K => {
            // block_q4_K: d, dmin (f16), scales[12], qs[128]. Sub-block j of 32 weights
            // sits in qs[32 (j/2) ..][..32], low nibbles for even j, high for odd.
            for b in raw.chunks_exact(block_bytes) {
                scales.push(word_at(b, 0));
                scales.extend((0..3).map(|i| word_at(b, 4 + 4 * i)));
                let qs = &b[16..144];
                for j in 0..8 {
                    let pair = &qs[32 * (j / 2)..][..32];
                    let shift = 4 * (j % 2);
                    let nib = |l: usize| (pair[l] >> shift) & 0xF;
                    let bytes: Vec<u8> = (0..16).map(|i| nib(i) | (nib(i + 16) << 4)).collect();
                    quants.extend(bytes.chunks_exact(4).map(|c| word_at(c, 0)));
                }
            }
        }
        _ => unreachable!("Format::of accepted {}", m.ttype),
    }
    debug_assert!(n_blocks > 0 || rows.is_empty());
    Ok(Repacked {
        format,
        quants,
        scales,
    })
}

/// Dequantizes unit `unit` of `r` as quant.wgsl does (the reference for the repacking
/// tests; the shader itself is tested against the CPU backend).
pub fn unit_weights(r: &Repacked, unit: usize) -> [f32; UNIT] {
    let mut w = [0f32; UNIT];
    let q = &r.quants[unit * r.format.quant_words()..][..r.format.quant_words()];
    let half = |x: u32| f16::from_bits(x as u16).to_f32();
    match r.format {
        Format::F32 => w
            .iter_mut()
            .zip(q)
            .for_each(|(o, &b)| *o = f32::from_bits(b)),
        Format::F16 => {
            for (i, &b) in q.iter().enumerate() {
                w[2 * i] = half(b & 0xFFFF);
                w[2 * i + 1] = half(b >> 16);
            }
        }
        Format::Q8_0 => {
            let d = half(r.scales[unit]);
            for i in 0..UNIT {
                w[i] = (q[i / 4] >> (8 * (i % 4))) as u8 as i8 as f32 * d;
            }
        }
        Format::Q4 | Format::Q4K => {
            let (scale, offset) = if r.format == Format::Q4 {
                (half(r.scales[unit] & 0xFFFF), half(r.scales[unit] >> 16))
            } else {
                q4k_affine(&r.scales, unit)
            };
            for i in 0..16 {
                let byte = (q[i / 4] >> (8 * (i % 4))) & 0xFF;
                w[i] = (byte & 0xF) as f32 * scale + offset;
                w[i + 16] = (byte >> 4) as f32 * scale + offset;
            }
        }
    }
    w
}

/// `(d * sc, -(dmin * m))` of Q4_K unit `unit`, as ggml's `get_scale_min_k4`.
fn q4k_affine(scales: &[u32], unit: usize) -> (f32, f32) {
    let (sb, j) = (unit / 8, unit % 8);
    let byte = |k: usize| (scales[sb * 4 + 1 + k / 4] >> (8 * (k % 4))) & 0xFF;
    let (sc, mn) = if j < 4 {
        (byte(j) & 63, byte(j + 4) & 63)
    } else {
        (
            (byte(j + 4) & 0xF) | ((byte(j - 4) >> 6) << 4),
            (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4),
        )
    };
    let d = f16::from_bits(scales[sb * 4] as u16).to_f32();
    let dmin = f16::from_bits((scales[sb * 4] >> 16) as u16).to_f32();
    (d * sc as f32, -(dmin * mn as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4K, BlockQ4_0, BlockQ8_0, GgmlType};

    /// Raw GGUF bytes of `rows` x `cols` weights quantized to `T` by candle (ggml's
    /// reference quantizers).
    fn quantized<T: GgmlType>(rows: usize, cols: usize) -> (Vec<f32>, Vec<u8>) {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        let mut blocks = vec![T::zeros(); rows * cols / T::BLCK_SIZE];
        T::from_float(&x, &mut blocks);
        let bytes = unsafe {
            std::slice::from_raw_parts(
                blocks.as_ptr() as *const u8,
                std::mem::size_of_val(blocks.as_slice()),
            )
        }
        .to_vec();
        (x, bytes)
    }

    /// Every unit of the repacked rows dequantizes to exactly the CPU's values.
    fn check(ttype: TensorType, rows: usize, cols: usize, bytes: &[u8]) {
        let m = Matrix::from_bytes(ttype, rows, cols, bytes).unwrap();
        let (first, last) = (1, rows);
        let r = repack(&m, first..last, "w").unwrap();
        let mut row = vec![0f32; cols];
        for (i, rr) in (first..last).enumerate() {
            m.row_to_f32(rr, &mut row);
            for u in 0..cols / UNIT {
                let got = unit_weights(&r, i * cols / UNIT + u);
                for k in 0..UNIT {
                    // Exact: equal values (0.0 and -0.0 alike).
                    assert!(
                        got[k] == row[u * UNIT + k],
                        "{ttype}: row {rr} col {} got {} want {}",
                        u * UNIT + k,
                        got[k],
                        row[u * UNIT + k]
                    );
                }
            }
        }
    }

    #[test]
    fn repacked_units_dequantize_exactly_as_the_cpu() {
        let (_, b) = quantized::<BlockQ4_0>(3, 64);
        check(TensorType::Q4_0, 3, 64, &b);
        let (_, b) = quantized::<BlockQ8_0>(3, 64);
        check(TensorType::Q8_0, 3, 64, &b);
        let (_, b) = quantized::<BlockQ4K>(3, 512);
        check(TensorType::Q4K, 3, 512, &b);
        let (x, _) = quantized::<BlockQ8_0>(3, 64);
        let f32_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        check(TensorType::F32, 3, 64, &f32_bytes);
        let f16_bytes: Vec<u8> = x
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        check(TensorType::F16, 3, 64, &f16_bytes);
        let bf16_bytes: Vec<u8> = x
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        check(TensorType::BF16, 3, 64, &bf16_bytes);
    }

    #[test]
    fn q4_1_repacks_exactly() {
        let mut bytes = Vec::new();
        for b in 0..6u32 {
            bytes.extend(f16::from_f32(0.01 * (b + 1) as f32).to_le_bytes());
            bytes.extend(f16::from_f32(-0.3 + 0.07 * b as f32).to_le_bytes());
            bytes.extend((0..16).map(|i| (i * 37 + b * 11) as u8));
        }
        check(TensorType::Q4_1, 3, 64, &bytes);
    }

    #[test]
    fn unsupported_types_are_refused_by_name() {
        let e = Format::of(TensorType::Q6K, "output.weight").unwrap_err();
        assert!(e.to_string().contains("output.weight"), "{e}");
        assert!(e.to_string().contains("CPU backend"), "{e}");
    }
}
