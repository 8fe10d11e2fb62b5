//! The CPU backend of the transformer: weights in RAM, each op run as it is called.

use super::ops::{self, AttentionShape, RopeTable};
use super::Matrix;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::lora::LoraPair;
use crate::model::{Act, Backend, Config, Linear, Logits, Pass, Upload};

/// The CPU backend: weights are [`Matrix`] values and `Vec<f32>` vectors.
pub struct Cpu;

impl Backend for Cpu {
    type Matrix = Matrix;
    type Vector = Vec<f32>;
    type Lora = LoraPair;

    fn matrix_bytes(m: &Matrix) -> usize {
        m.n_bytes()
    }

    fn vector_bytes(v: &Vec<f32>) -> usize {
        std::mem::size_of_val(v.as_slice())
    }
}

/// Weights read from a file are already in CPU form.
impl Upload<Cpu> for Cpu {
    fn matrix(&mut self, _name: &str, m: Matrix) -> Result<Matrix> {
        Ok(m)
    }

    fn vector(&mut self, _name: &str, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }
}

/// One forward pass of `tokens`, the next positions of the sequence in `cache`.
pub struct CpuPass<'a> {
    config: &'a Config,
    tokens: &'a [u32],
    cache: &'a mut KvCache,
    /// Position of the first token.
    pos0: usize,
    rope: Option<RopeTable>,
    /// (n, width) per [`Act`], indexed by `Act as usize`.
    acts: [Vec<f32>; 9],
    /// (rows wanted, vocab)
    logits: Vec<f32>,
    /// When pooling: (d) the sum over rows of the final-normed hidden states.
    pooled: Option<Vec<f32>>,
}

impl<'a> CpuPass<'a> {
    /// A pass over `tokens` (already checked against the vocabulary and the cache).
    pub fn new(config: &'a Config, tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        let n = tokens.len();
        let acts = Act::ALL.map(|a| vec![0f32; n * a.width(config)]);
        let pos0 = cache.len();
        CpuPass {
            config,
            tokens,
            cache,
            pos0,
            rope: None,
            acts,
            logits: Vec::new(),
            pooled: None,
        }
    }

    /// Also sums the rows' final hidden states (after the final norm), for the
    /// switcher's features ([`CpuPass::finish_pooled`]).
    pub fn pooling(mut self) -> Self {
        self.pooled = Some(vec![0f32; self.config.n_embd]);
        self
    }

    /// [`CpuPass::finish`], plus the pooled sum (d) when [`CpuPass::pooling`] asked.
    pub fn finish_pooled(mut self) -> (Vec<f32>, Option<Vec<f32>>) {
        let pooled = self.pooled.take();
        (self.finish(), pooled)
    }

    /// Commits the new positions to the cache and returns the logits asked for.
    pub fn finish(self) -> Vec<f32> {
        self.cache.commit(self.tokens.len());
        self.logits
    }

    /// `a` for reading and `b` for writing, at once.
    fn pair(&mut self, a: Act, b: Act) -> (&[f32], &mut [f32]) {
        let (a, b) = (a as usize, b as usize);
        assert_ne!(a, b, "an op may not read and write one activation");
        if a < b {
            let (lo, hi) = self.acts.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.acts.split_at_mut(a);
            (&hi[0], &mut lo[b])
        }
    }
}

impl Pass<Cpu> for CpuPass<'_> {
    fn embed(&mut self, table: &Matrix) {
        let d = self.config.n_embd;
        let x = &mut self.acts[Act::X as usize];
        for (row, &t) in x.chunks_exact_mut(d).zip(self.tokens) {
            table.row_to_f32(t as usize, row);
        }
    }

    fn rms_norm(&mut self, x: Act, weight: &Vec<f32>, out: Act) {
        let eps = self.config.rms_eps;
        let (x, out) = self.pair(x, out);
        ops::rms_norm(x, weight, eps, out);
    }

    fn linear(&mut self, w: &Linear<Cpu>, x: Act, out: Act) {
        let n = self.tokens.len();
        let (x, y) = self.pair(x, out);
        w.weight.matmul(x, n, y);
        if let Some(b) = &w.bias {
            ops::add_bias(y, b);
        }
    }

    fn lora(&mut self, pair: &LoraPair, x: Act, out: Act) {
        let (x, y) = self.pair(x, out);
        for (xr, yr) in x.chunks_exact(pair.inp).zip(y.chunks_exact_mut(pair.out)) {
            pair.apply(xr, yr);
        }
    }

    fn rope(&mut self, x: Act, n_heads: usize, freqs: Option<&Vec<f32>>) {
        let c = self.config;
        let (pos0, n) = (self.pos0, self.tokens.len());
        let table = self.rope.get_or_insert_with(|| {
            RopeTable::new(
                pos0,
                n,
                c.head_dim,
                c.rope_base,
                freqs.map(|f| f.as_slice()),
            )
        });
        table.apply(&mut self.acts[x as usize], n_heads, c.rope_style);
    }

    fn attend(&mut self, layer: usize) {
        let c = self.config;
        let [_, _, q, k, v, att, ..] = &mut self.acts;
        self.cache.append(layer, k, v);
        let kv = self.cache.layer(layer);
        let shape = AttentionShape {
            n_heads: c.n_head,
            n_kv_heads: c.n_kv_head,
            head_dim: c.head_dim,
        };
        ops::attention(q, kv, self.pos0, shape, att);
    }

    fn add(&mut self, x: Act, y: Act) {
        let (y, x) = self.pair(y, x);
        ops::add_in_place(x, y);
    }

    fn swiglu(&mut self) {
        let (up, gate) = self.pair(Act::Up, Act::Gate);
        ops::swiglu_in_place(gate, up);
    }

    fn output(&mut self, norm: &Vec<f32>, head: &Matrix, want: Logits) {
        let c = self.config;
        let (n, d) = (self.tokens.len(), c.n_embd);
        let x = &self.acts[Act::X as usize];
        if let Some(sum) = &mut self.pooled {
            let mut normed = vec![0f32; d];
            for row in x.chunks_exact(d) {
                ops::rms_norm(row, norm, c.rms_eps, &mut normed);
                sum.iter_mut().zip(&normed).for_each(|(s, v)| *s += v);
            }
        }
        let rows = match want {
            Logits::None => return,
            Logits::Last => &x[(n - 1) * d..],
            Logits::All => &x[..],
        };
        let m = rows.len() / d;
        let mut normed = vec![0f32; m * d];
        ops::rms_norm(rows, norm, c.rms_eps, &mut normed);
        self.logits = vec![0f32; m * c.vocab_size];
        head.matmul(&normed, m, &mut self.logits);
    }
}
