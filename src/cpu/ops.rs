//! The small ops of the forward pass, on row-major `f32` slices.

use crate::kv_cache::KvView;
use rayon::prelude::*;

/// `out = x / rms(x) * weight`, row by row; `x` and `out` are (rows, d).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        // Accumulated in f64 as ggml does: residual streams carry outliers in the
        // tens of thousands, and matching ggml's rounding keeps logits comparable.
        let mean_sq = (xr.iter().map(|&v| (v * v) as f64).sum::<f64>() / d as f64) as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `bias` (d) to every row of `x` (rows, d).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

/// SwiGLU: `gate = silu(gate) * up`.
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// How rotary embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: ggml's "normal" mode, used by `llama` GGUFs.
    Interleaved,
    /// Halves `(i, i + d/2)`: ggml's NeoX mode, used by `qwen2`.
    Halves,
}

/// Per-position rotation tables for a chunk: cos and sin, each (positions, head_dim / 2).
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

impl RopeTable {
    /// `theta_i = pos * base^(-2i/d) / factor_i`, computed as ggml does (a running product
    /// in f32), for positions `start..start + n`.
    pub fn new(
        start: usize,
        n: usize,
        head_dim: usize,
        base: f32,
        factors: Option<&[f32]>,
    ) -> Self {
        let half = head_dim / 2;
        let theta_scale = base.powf(-2.0 / head_dim as f32);
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            let mut theta = p as f32;
            for i in 0..half {
                let t = match factors {
                    Some(f) => theta / f[i],
                    None => theta,
                };
                cos.push(t.cos());
                sin.push(t.sin());
                theta *= theta_scale;
            }
        }
        RopeTable { cos, sin, half }
    }

    /// Rotates every head of `x` (positions, n_heads * head_dim) in place.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, style: RopeStyle) {
        let hd = self.half * 2;
        for (p, row) in x.chunks_exact_mut(n_heads * hd).enumerate() {
            let cos = &self.cos[p * self.half..(p + 1) * self.half];
            let sin = &self.sin[p * self.half..(p + 1) * self.half];
            for head in row.chunks_exact_mut(hd) {
                for i in 0..self.half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + self.half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// Lanes of [`dot`]: 4 AVX registers of 8, as ggml's `ggml_vec_dot_f32`.
const DOT_LANES: usize = 32;

/// `a * b + c`, fused where the target has FMA (x86-64-v3); elsewhere (wasm) a fused
/// multiply-add is a slow software call, so it is a plain multiply and add there.
#[inline(always)]
fn fused_mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// `sum(a[i] * b[i])` with 32 fused multiply-add lanes, reduced in ggml's order
/// (lanes j and j+16, then j and j+8, then the 8-wide horizontal sum), then the tail.
/// The fixed-size lane array vectorizes; the order keeps sums close to llama.cpp's.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..DOT_LANES {
            acc[l] = fused_mul_add(xa[l], xb[l], acc[l]);
        }
    }
    let mut v8 = [0f32; 8];
    for l in 0..8 {
        v8[l] = (acc[l] + acc[l + 16]) + (acc[l + 8] + acc[l + 24]);
    }
    let t = [v8[0] + v8[4], v8[1] + v8[5], v8[2] + v8[6], v8[3] + v8[7]];
    let mut sum = (t[0] + t[1]) + (t[2] + t[3]);
    for (x, y) in ta.iter().zip(tb) {
        sum += x * y;
    }
    sum
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Causal grouped-query attention of `n_q` new queries against a KV sequence.
///
/// - `q`: (n_q, n_heads * head_dim); query `t` sits at position `first_pos + t`.
/// - `k`, `v`: (positions, n_kv_heads * head_dim), holding at least positions
///   `0..=first_pos + n_q - 1`.
/// - `out`: (n_q, n_heads * head_dim).
///
/// Query head `h` reads KV head `h / (n_heads / n_kv_heads)`; query `t` attends to
/// positions `0..=first_pos + t`.
pub fn attention(
    q: &[f32],
    kv: KvView<'_>,
    first_pos: usize,
    shape: AttentionShape,
    out: &mut [f32],
) {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = shape;
    let n_q = q.len() / (n_heads * hd);
    let group = n_heads / n_kv_heads;
    let kv_stride = n_kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // Positions in order across the segments (shared prefix, then own): each
    // segment's rows of kv head `kvh`, up to `n_pos` positions in all.
    let rows = |n_pos: usize, kvh: usize, values: bool| {
        let mut left = n_pos;
        kv.segments.into_iter().flat_map(move |(k, v)| {
            let data = if values { v } else { k };
            let n = (data.len() / kv_stride).min(left);
            left -= n;
            (0..n).map(move |p| &data[p * kv_stride + kvh * hd..][..hd])
        })
    };

    // One task per (query, head): each writes its own head_dim slice of `out`.
    out.par_chunks_mut(hd)
        .enumerate()
        .with_min_len(4)
        .for_each(|(i, o)| {
            let (t, h) = (i / n_heads, i % n_heads);
            let kvh = h / group;
            let qh = &q[t * n_heads * hd + h * hd..][..hd];
            let n_pos = first_pos + t + 1;
            let mut scores = Vec::with_capacity(n_pos);
            let mut max = f32::NEG_INFINITY;
            for kp in rows(n_pos, kvh, false) {
                let s = dot(qh, kp) * scale;
                max = max.max(s);
                scores.push(s);
            }
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            o.fill(0.0);
            for (&s, vp) in scores.iter().zip(rows(n_pos, kvh, true)) {
                let w = s / total;
                for (a, &b) in o.iter_mut().zip(vp) {
                    *a += w * b;
                }
            }
        });
    debug_assert_eq!(out.len(), n_q * n_heads * hd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_the_weight() {
        let x = [2.0f32; 4];
        let w = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        assert_eq!(out, w);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let table = RopeTable::new(0, 2, 4, 10000.0, None);
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        table.apply(&mut x, 1, RopeStyle::Halves);
        assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
        let n0: f32 = x[..4].iter().map(|v| v * v).sum();
        let n1: f32 = x[4..].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
        assert_ne!(&x[4..], &x[..4]);
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        for n in [0, 1, 31, 32, 64, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn attention_of_single_position_returns_its_value() {
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 0.0, 1.0];
        let k = [0.5, 0.5];
        let v = [3.0, -1.0];
        let mut out = [0f32; 4];
        attention(&q, KvView::single(&k, &v), 0, shape, &mut out);
        assert_eq!(out, [3.0, -1.0, 3.0, -1.0]);
    }

    #[test]
    fn attention_over_a_shared_prefix_and_own_positions_equals_one_run() {
        let shape = AttentionShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let kv_dim = 16;
        let f = |n: usize, s: f32| (0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<f32>>();
        let (k, v) = (f(7 * kv_dim, 0.3), f(7 * kv_dim, 0.7));
        let q = f(2 * 32, 0.9);
        let mut whole = vec![0f32; 64];
        attention(&q, KvView::single(&k, &v), 5, shape, &mut whole);
        for split in [0, 3, 5] {
            let (pk, ok) = k.split_at(split * kv_dim);
            let (pv, ov) = v.split_at(split * kv_dim);
            let view = KvView {
                segments: [(pk, pv), (ok, ov)],
            };
            let mut out = vec![0f32; 64];
            attention(&q, view, 5, shape, &mut out);
            assert_eq!(out, whole, "prefix of {split} positions");
        }
    }
}
