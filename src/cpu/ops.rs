//! The small ops of the forward pass, on row-major `f32` slices.

use crate::kv_cache::KvView;

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
    for (g, u) in gate.chunks_mut(EXP_LANES).zip(up.chunks(EXP_LANES)) {
        let mut e = [0f32; EXP_LANES];
        for (e, &g) in e.iter_mut().zip(g.iter()) {
            *e = -g;
        }
        let e = exp_lanes(e);
        for ((g, &u), e) in g.iter_mut().zip(u).zip(e) {
            *g = *g / (1.0 + e) * u;
        }
    }
}

/// Lanes [`exp_lanes`] computes at once (one SIMD128 or SSE register).
const EXP_LANES: usize = 4;

/// `e^x` of each lane, within 2 ulp of the correctly rounded value, in plain lane
/// arithmetic the compiler turns into SIMD (wasm SIMD128, SSE/AVX): the scalar `exp`
/// of wasm's libm is a branchy call, 6% of the time of a 512-token prefill and 256
/// decode steps in the browser before this.
///
/// `x = n ln2 + r` with `n = round(x / ln2)` and `|r| <= ln2 / 2` (ln2 split in two so
/// `n ln2` is exact), `e^r = 1 + r + r^2 P(r)` with Cephes' degree-5 `P`, and `2^n` put
/// into the exponent bits. Inputs are clamped to `[-87, 88]`: below, `e^x` is under
/// 1.7e-38, nothing next to the softmax's `e^0 = 1`; above, it would overflow.
#[inline]
fn exp_lanes(x: [f32; EXP_LANES]) -> [f32; EXP_LANES] {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355 / 512: exact times any n here
    const LN2_LO: f32 = -2.121_944_4e-4; // ln2 - LN2_HI
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    // Lane by lane in one loop, which the compiler turns into vector instructions.
    let mut out = [0f32; EXP_LANES];
    for (o, &x) in out.iter_mut().zip(&x) {
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2_E).round_ties_even();
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let p = P.iter().fold(0f32, |acc, &c| acc * r + c);
        let e = 1.0 + r + r * r * p;
        // 2^n for n in -126..=127: the exponent field n + 127.
        *o = e * f32::from_bits(((n as i32 + 127) as u32) << 23);
    }
    out
}

/// `x = e^x` in place (see [`exp_lanes`]).
pub fn exp_in_place(xs: &mut [f32]) {
    for chunk in xs.chunks_mut(EXP_LANES) {
        let mut x = [0f32; EXP_LANES];
        x[..chunk.len()].copy_from_slice(chunk);
        let e = exp_lanes(x);
        chunk.copy_from_slice(&e[..chunk.len()]);
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
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // The same sums in registers (compilers keep the lane array in memory here).
        super::x86::dot_f32(a, b)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        dot_lanes(a, b)
    }
}

/// [`dot`] lane by lane.
#[inline]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
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

/// Calls `f` with `cols` of the key rows (or the value rows, with `values`) of the first
/// `n_pos` positions of `kv`, in order across its segments (shared prefix, then own).
#[inline(always)]
fn for_each_kv_row(
    kv: KvView<'_>,
    n_pos: usize,
    row_len: usize,
    cols: std::ops::Range<usize>,
    values: bool,
    mut f: impl FnMut(&[f32]),
) {
    let mut left = n_pos;
    for (k, v) in kv.segments {
        let data = if values { v } else { k };
        let n = (data.len() / row_len).min(left);
        left -= n;
        for row in data[..n * row_len].chunks_exact(row_len) {
            f(&row[cols.clone()]);
        }
    }
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

    // One task per (query, KV head): the `group` query heads that share the KV head, whose
    // slices of `out` are adjacent, read each key and value row once between them.
    // Each head's sums are those of one head alone (the same dots, in the same order).
    // Block dots of the work: per (query, head), 2 * head_dim multiply-adds a position.
    let work = (0..n_q).map(|t| first_pos + t + 1).sum::<usize>() * n_heads * hd / 16;
    super::for_each_chunk(out, group * hd, 1, work, |(i, o)| {
        let (t, kvh) = (i / n_kv_heads, i % n_kv_heads);
        // (group, head_dim): the queries of heads kvh * group .. (kvh + 1) * group.
        let qg = &q[t * n_heads * hd + kvh * group * hd..][..group * hd];
        let n_pos = first_pos + t + 1;
        let mut scores = vec![0f32; group * n_pos]; // (group, n_pos)
        let head = kvh * hd..(kvh + 1) * hd;
        let mut p = 0;
        for_each_kv_row(kv, n_pos, kv_stride, head.clone(), false, |kp| {
            for (j, qh) in qg.chunks_exact(hd).enumerate() {
                scores[j * n_pos + p] = dot(qh, kp) * scale;
            }
            p += 1;
        });
        let totals: Vec<f32> = scores
            .chunks_exact_mut(n_pos)
            .map(|s| {
                let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                s.iter_mut().for_each(|v| *v -= max);
                exp_in_place(s);
                s.iter().sum()
            })
            .collect();
        o.fill(0.0);
        let mut p = 0;
        for_each_kv_row(kv, n_pos, kv_stride, head, true, |vp| {
            for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
                let w = scores[j * n_pos + p] / totals[j];
                for (a, &b) in oh.iter_mut().zip(vp) {
                    *a += w * b;
                }
            }
            p += 1;
        });
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
    fn dot_in_registers_is_bit_identical_to_the_lanes() {
        for n in [0, 1, 31, 32, 64, 100, 576] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 1e-3)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 104729 % 997) as f32 - 480.0) * 3e-2)
                .collect();
            assert_eq!(
                dot(&a, &b).to_bits(),
                dot_lanes(&a, &b).to_bits(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        // Every 97th f32 bit pattern between -87 and 88, and the ends.
        let mut xs: Vec<f32> = (0..u32::MAX / 97)
            .map(|i| f32::from_bits(i * 97))
            .flat_map(|x| [x, -x])
            .filter(|x| (-87.0..=88.0).contains(x))
            .chain([0.0, -87.0, 88.0, 1.0, -1.0])
            .collect();
        let want: Vec<f64> = xs.iter().map(|&x| (x as f64).exp()).collect();
        exp_in_place(&mut xs);
        for (got, want) in xs.iter().zip(&want) {
            let ulp = (*want as f32).abs() * f32::EPSILON;
            assert!(
                (*got as f64 - want).abs() <= 2.0 * ulp as f64,
                "e^x = {want}: got {got}"
            );
        }
    }

    #[test]
    fn exp_clamps_to_zero_and_stays_finite() {
        let mut xs = [-1000.0, -88.5, 89.0, 1000.0, -0.0];
        exp_in_place(&mut xs);
        assert!(xs[0] < 1e-37 && xs[1] < 1e-37, "{xs:?}");
        assert!(
            xs[2].is_finite() && xs[3].is_finite() && xs[3] > 1e38,
            "{xs:?}"
        );
        assert_eq!(xs[4], 1.0);
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
