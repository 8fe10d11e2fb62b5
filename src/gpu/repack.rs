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
    /// Q5_0 and Q5_1: nibbles as [`Format::Q4`] plus a word of fifth bits; one `(d, m)`
    /// f16 pair per unit.
    Q5 = 5,
    /// Q5_K: scales as [`Format::Q4K`], codes as [`Format::Q5`].
    Q5K = 6,
    /// Q6_K: nibbles as [`Format::Q4`] plus two words of high bit pairs; per unit the
    /// super-block's `d` and the two 16-weight sub-blocks' int8 scales.
    Q6K = 7,
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
            TensorType::Q5_0 | TensorType::Q5_1 => Format::Q5,
            TensorType::Q5K => Format::Q5K,
            TensorType::Q6K => Format::Q6K,
            other => {
                return Err(Error::UnsupportedConfig(format!(
                    "tensor `{name}` is stored as {other}, which the GPU backend does not run; \
                     it runs F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K \
                     (use the CPU backend for this model)"
                )))
            }
        })
    }

    /// Words of `scales` per row of `units` units (Q4_K, Q5_K: four per 8 units).
    pub fn scale_words(self, units: usize) -> usize {
        match self {
            Format::F32 | Format::F16 => 0,
            Format::Q8_0 | Format::Q4 | Format::Q5 | Format::Q6K => units,
            Format::Q4K | Format::Q5K => units / 2,
        }
    }

    /// Words of `quants` per unit.
    pub fn quant_words(self) -> usize {
        match self {
            Format::F32 => 32,
            Format::F16 => 16,
            Format::Q8_0 => 8,
            Format::Q4 | Format::Q4K => 4,
            Format::Q5 | Format::Q5K => 5,
            Format::Q6K => 6,
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

/// The GPU words of one unit's codes (each below `1 << bits`, 4 to 6 bits): four words
/// of low nibbles, byte i holding weight i (low) and i + 16 (high); for 5 bits a word
/// with weight i's fifth bit at bit i; for 6 bits two words with weight i's top two bits
/// at bits 2 (i % 16) of word i / 16.
fn push_codes(quants: &mut Vec<u32>, codes: &[u8; UNIT], bits: u32) {
    let nibble_bytes: [u8; 16] =
        std::array::from_fn(|i| (codes[i] & 0xF) | (codes[i + 16] & 0xF) << 4);
    quants.extend(nibble_bytes.chunks_exact(4).map(|c| word_at(c, 0)));
    match bits {
        4 => {}
        5 => quants.push((0..UNIT).fold(0, |w, i| w | ((codes[i] as u32 >> 4) & 1) << i)),
        6 => quants.extend([0, 16].map(|first| {
            (0..16).fold(0, |w, i| {
                w | ((codes[first + i] as u32 >> 4) & 3) << (2 * i)
            })
        })),
        _ => unreachable!("{bits}-bit codes"),
    }
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
        TensorType::Q4K | TensorType::Q5K => {
            // block_q4_K: d, dmin (f16), scales[12], qs[128]; block_q5_K: the same with
            // qh[32] before qs. Sub-block j of 32 weights sits in qs[32 (j/2) ..][..32],
            // low nibbles for even j, high for odd; its fifth bits are bit j of qh[0..32].
            let five = m.ttype == TensorType::Q5K;
            for b in raw.chunks_exact(block_bytes) {
                scales.push(word_at(b, 0));
                scales.extend((0..3).map(|i| word_at(b, 4 + 4 * i)));
                let (qh, qs) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[..0], &b[16..144])
                };
                for j in 0..8 {
                    let codes: [u8; UNIT] = std::array::from_fn(|l| {
                        let nibble = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
                        let fifth = if five { (qh[l] >> j) & 1 } else { 0 };
                        nibble | fifth << 4
                    });
                    push_codes(&mut quants, &codes, if five { 5 } else { 4 });
                }
            }
        }
        TensorType::Q5_0 | TensorType::Q5_1 => {
            // block_q5_0: d (f16), qh (u32), qs[16]; w = d * (q - 16) = d * q + (-16 d).
            // block_q5_1: d, m (f16), qh, qs[16]; w = d * q + m. qs is the Q4 layout
            // already; bit i of qh is weight i's fifth bit.
            let with_min = m.ttype == TensorType::Q5_1;
            let at = if with_min { 4 } else { 2 };
            for b in raw.chunks_exact(block_bytes) {
                let d = f16::from_bits(u16_at(b, 0));
                let min = if with_min {
                    f16::from_bits(u16_at(b, 2))
                } else {
                    f16::from_f32(-16.0 * d.to_f32())
                };
                scales.push(d.to_bits() as u32 | (min.to_bits() as u32) << 16);
                quants.extend((0..4).map(|i| word_at(b, at + 4 + 4 * i)));
                quants.push(word_at(b, at));
            }
        }
        TensorType::Q6K => {
            // block_q6_K: ql[128], qh[64], scales[16] (i8), d (f16); 16 sub-blocks of 16
            // weights, w = d * scales[s] * (q - 32) with q of 6 bits (ggml's
            // dequantize_row_q6_K gives the bit positions).
            for b in raw.chunks_exact(block_bytes) {
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                let d = u16_at(b, 208) as u32;
                let mut q = [0u8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    for l in 0..32 {
                        let y = &mut q[128 * half + l..];
                        y[0] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        y[32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        y[64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                for (u, codes) in q.chunks_exact(UNIT).enumerate() {
                    let codes: &[u8; UNIT] = codes.try_into().expect("32 codes");
                    push_codes(&mut quants, codes, 6);
                    scales.push(d | (sc[2 * u] as u32) << 16 | (sc[2 * u + 1] as u32) << 24);
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
        Format::Q4 | Format::Q4K | Format::Q5 | Format::Q5K => {
            let (scale, offset) = match r.format {
                Format::Q4 | Format::Q5 => {
                    (half(r.scales[unit] & 0xFFFF), half(r.scales[unit] >> 16))
                }
                _ => q4k_affine(&r.scales, unit),
            };
            for (i, o) in w.iter_mut().enumerate() {
                *o = unit_code(r.format, q, i) as f32 * scale + offset;
            }
        }
        Format::Q6K => {
            let s = r.scales[unit];
            let d = half(s & 0xFFFF);
            for (i, o) in w.iter_mut().enumerate() {
                let sc = (s >> (16 + 8 * (i / 16))) as u8 as i8 as f32;
                *o = d * sc * (unit_code(r.format, q, i) as f32 - 32.0);
            }
        }
    }
    w
}

/// The code of weight `i` of a unit's words `q` (see [`push_codes`]).
fn unit_code(format: Format, q: &[u32], i: usize) -> u32 {
    let byte = (q[(i % 16) / 4] >> (8 * (i % 4))) & 0xFF;
    let nibble = if i < 16 { byte & 0xF } else { byte >> 4 };
    match format {
        Format::Q5 | Format::Q5K => nibble | ((q[4] >> i) & 1) << 4,
        Format::Q6K => nibble | ((q[4 + i / 16] >> (2 * (i % 16))) & 3) << 4,
        _ => nibble,
    }
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
    use candle_core::quantized::k_quants::{
        BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
    };

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
    fn five_and_six_bit_formats_repack_exactly() {
        let (_, b) = quantized::<BlockQ5_0>(3, 64);
        check(TensorType::Q5_0, 3, 64, &b);
        let (_, b) = quantized::<BlockQ5_1>(3, 64);
        check(TensorType::Q5_1, 3, 64, &b);
        let (_, b) = quantized::<BlockQ5K>(3, 512);
        check(TensorType::Q5K, 3, 512, &b);
        let (_, b) = quantized::<BlockQ6K>(3, 512);
        check(TensorType::Q6K, 3, 512, &b);
    }

    #[test]
    fn unsupported_types_are_refused_by_name() {
        let e = Format::of(TensorType::Q3K, "output.weight").unwrap_err();
        assert!(e.to_string().contains("output.weight"), "{e}");
        assert!(e.to_string().contains("CPU backend"), "{e}");
    }
}
