//! LoRA matrices in memory, in the precision their file has ([`LoraMatrix`]): our INT8
//! form ([`Int8Rows`]: i8 rows with one f32 scale each, `value[j][k] = q[j][k] *
//! scale[j]`, the scale max |row| / 127) as it is, float files as f32.
//!
//! A LoRA update is read in full for every token it applies to, so its bytes are its
//! cost: the shipped rank-16 adapter is 5.5 MB in INT8 against 19.5 MB as f32, and a
//! decode step of one candidate with it takes 14% less time. Float adapters stay f32 so
//! that they apply exactly as PEFT applies them; `edge-reason export-adapter` makes the
//! INT8 form.

/// One matrix of a LoRA pair.
#[derive(Debug, Clone, PartialEq)]
pub enum LoraMatrix {
    /// (rows, cols), row-major.
    F32 {
        values: Vec<f32>,
        cols: usize,
    },
    Int8(Int8Rows),
}

impl LoraMatrix {
    pub fn cols(&self) -> usize {
        match self {
            LoraMatrix::F32 { cols, .. } => *cols,
            LoraMatrix::Int8(m) => m.cols,
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            LoraMatrix::F32 { values, cols } => values.len() / cols,
            LoraMatrix::Int8(m) => m.rows(),
        }
    }

    /// Bytes in memory.
    pub fn n_bytes(&self) -> usize {
        match self {
            LoraMatrix::F32 { values, .. } => 4 * values.len(),
            LoraMatrix::Int8(m) => m.n_bytes(),
        }
    }

    /// The values as f32, (rows, cols).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            LoraMatrix::F32 { values, .. } => values.clone(),
            LoraMatrix::Int8(m) => m.dequantize(),
        }
    }

    /// `row(j) . x` for an f32 `x` of `cols` values.
    #[inline]
    pub fn dot_row(&self, j: usize, x: &[f32]) -> f32 {
        match self {
            LoraMatrix::F32 { values, cols } => lanes_dot(&values[j * cols..(j + 1) * cols], x),
            LoraMatrix::Int8(m) => m.dot_row(j, x),
        }
    }

    /// Every value times `s`.
    pub fn scale_by(&mut self, s: f32) {
        match self {
            LoraMatrix::F32 { values, .. } => values.iter_mut().for_each(|v| *v *= s),
            LoraMatrix::Int8(m) => m.scale.iter_mut().for_each(|v| *v *= s),
        }
    }

    /// The rows in the order `order`: row `i` of the result is row `order[i]`.
    pub fn reorder_rows(&self, order: &[usize]) -> LoraMatrix {
        let gather = |v: &[f32], cols: usize| -> Vec<f32> {
            order
                .iter()
                .flat_map(|&j| v[j * cols..(j + 1) * cols].iter().copied())
                .collect()
        };
        match self {
            LoraMatrix::F32 { values, cols } => LoraMatrix::F32 {
                values: gather(values, *cols),
                cols: *cols,
            },
            LoraMatrix::Int8(m) => LoraMatrix::Int8(Int8Rows {
                q: order
                    .iter()
                    .flat_map(|&j| m.row(j).0.iter().copied())
                    .collect(),
                scale: gather(&m.scale, 1),
                cols: m.cols,
            }),
        }
    }
}

/// A (rows, cols) matrix as i8 rows with one f32 scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    /// (rows, cols), row-major.
    pub q: Vec<i8>,
    /// (rows,)
    pub scale: Vec<f32>,
    pub cols: usize,
}

impl Int8Rows {
    /// Rounds each row of `m` (rows, cols) to the nearest multiple of its scale,
    /// max |row| / 127 (1 for a row of zeros).
    pub fn quantize(m: &[f32], cols: usize) -> Int8Rows {
        let mut q = Vec::with_capacity(m.len());
        let mut scale = Vec::with_capacity(m.len() / cols.max(1));
        for row in m.chunks_exact(cols) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            q.extend(
                row.iter()
                    .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
            );
            scale.push(s);
        }
        Int8Rows { q, scale, cols }
    }

    /// The matrix as f32, (rows, cols).
    pub fn dequantize(&self) -> Vec<f32> {
        self.q
            .chunks_exact(self.cols)
            .zip(&self.scale)
            .flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 * s))
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.scale.len()
    }

    /// Row `j`'s quants and scale.
    #[inline]
    pub fn row(&self, j: usize) -> (&[i8], f32) {
        (&self.q[j * self.cols..(j + 1) * self.cols], self.scale[j])
    }

    /// Bytes in memory: one per weight and four per row.
    pub fn n_bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }

    /// `row(j) . x` for an f32 `x` of `cols` values.
    #[inline]
    pub fn dot_row(&self, j: usize, x: &[f32]) -> f32 {
        let (q, s) = self.row(j);
        s * lanes_dot(q, x)
    }
}

/// `sum(q[i] * x[i])`: long rows (A's, a layer's width) in four vectors of lanes, short
/// ones (B's, the rank) in one.
#[inline]
fn lanes_dot<T: Copy + Into<f32>>(q: &[T], x: &[f32]) -> f32 {
    if q.len() >= 128 {
        dot::<T, 32>(q, x)
    } else {
        dot::<T, 8>(q, x)
    }
}

/// `sum(q[i] * x[i])` in `L` lanes, which the compiler vectorizes (an i8 to f32
/// conversion included) on x86 and on wasm SIMD128.
#[inline]
fn dot<T: Copy + Into<f32>, const L: usize>(q: &[T], x: &[f32]) -> f32 {
    debug_assert_eq!(q.len(), x.len());
    let mut acc = [0f32; L];
    let (cq, cx) = (q.chunks_exact(L), x.chunks_exact(L));
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(cx.remainder())
        .map(|(&a, &b)| a.into() * b)
        .sum();
    for (a, b) in cq.zip(cx) {
        for l in 0..L {
            acc[l] += a[l].into() * b[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    #[test]
    fn rows_round_within_half_a_step_and_dot_like_their_values() {
        let mut rng = SmallRng::seed_from_u64(4);
        for cols in [16, 37, 576] {
            let mut m: Vec<f32> = (0..5 * cols).map(|_| rng.random_range(-0.3..0.3)).collect();
            m[cols..2 * cols].fill(0.0); // a row of zeros
            let r = Int8Rows::quantize(&m, cols);
            assert_eq!((r.rows(), r.n_bytes()), (5, 5 * cols + 20));
            let back = r.dequantize();
            for (j, (row, back)) in m.chunks(cols).zip(back.chunks(cols)).enumerate() {
                let step = r.scale[j];
                for (v, b) in row.iter().zip(back) {
                    assert!((v - b).abs() <= 0.5 * step + 1e-7, "{v} vs {b}");
                }
                let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let want: f64 = back
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                let got = r.dot_row(j, &x) as f64;
                assert!(
                    (got - want).abs() < 1e-4,
                    "cols {cols} row {j}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_row_at_the_largest_value_keeps_it_exactly() {
        let r = Int8Rows::quantize(&[-127.0, 31.6, 64.2, 0.0], 4);
        assert_eq!(
            (r.q.as_slice(), r.scale[0]),
            ([-127, 32, 64, 0].as_slice(), 1.0)
        );
        assert_eq!(r.dequantize(), [-127.0, 32.0, 64.0, 0.0]);
    }
}
