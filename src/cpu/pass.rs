//! The CPU backend of the transformer: weights in RAM, each op run as it is called.

use std::borrow::Cow;
use std::ops::Range;

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

/// One sequence of a pass: its rows and the cache they extend.
struct Seq<'a> {
    cache: &'a mut KvCache,
    /// Position of its first new row.
    pos0: usize,
    /// Its rows in the pass's activations.
    rows: Range<usize>,
    /// Rotation tables of its rows, made on first use.
    rope: Option<RopeTable>,
}

/// One forward pass of new tokens of one or more sequences (each with its own KV
/// cache, e.g. the candidates of a request, one token each): the linear layers run on
/// every row at once, so each weight is read once per pass, not once per sequence;
/// RoPE and attention run per sequence.
pub struct CpuPass<'a> {
    config: &'a Config,
    /// (rows) every sequence's tokens, one after the other.
    tokens: Vec<u32>,
    seqs: Vec<Seq<'a>>,
    /// (rows, width) per [`Act`], indexed by `Act as usize`.
    acts: [Vec<f32>; 9],
    /// (rows wanted, vocab)
    logits: Vec<f32>,
    /// When pooling: (d) the sum over rows of the final-normed hidden states.
    pooled: Option<Vec<f32>>,
}

impl<'a> CpuPass<'a> {
    /// A pass over `tokens` (already checked against the vocabulary and the cache).
    pub fn new(config: &'a Config, tokens: &[u32], cache: &'a mut KvCache) -> Self {
        Self::batch(config, vec![(tokens, cache)])
    }

    /// A pass over several sequences' new tokens; [`Logits::Last`] then gives one row
    /// of logits per sequence, in order.
    pub fn batch(config: &'a Config, seqs: Vec<(&[u32], &'a mut KvCache)>) -> Self {
        let mut tokens = Vec::new();
        let seqs = seqs
            .into_iter()
            .map(|(t, cache)| {
                let rows = tokens.len()..tokens.len() + t.len();
                tokens.extend_from_slice(t);
                Seq {
                    pos0: cache.len(),
                    cache,
                    rows,
                    rope: None,
                }
            })
            .collect();
        let n = tokens.len();
        CpuPass {
            config,
            tokens,
            seqs,
            acts: Act::ALL.map(|a| vec![0f32; n * a.width(config)]),
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

    /// Commits the new positions to the caches and returns the logits asked for.
    pub fn finish(self) -> Vec<f32> {
        for s in self.seqs {
            s.cache.commit(s.rows.len());
        }
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

/// The rows `r` of an activation of row width `w`.
fn rows_of<'x>(x: &'x [f32], r: &Range<usize>, w: usize) -> &'x [f32] {
    &x[r.start * w..r.end * w]
}

fn rows_of_mut<'x>(x: &'x mut [f32], r: &Range<usize>, w: usize) -> &'x mut [f32] {
    &mut x[r.start * w..r.end * w]
}

impl Pass<Cpu> for CpuPass<'_> {
    fn embed(&mut self, table: &Matrix) {
        let d = self.config.n_embd;
        let x = &mut self.acts[Act::X as usize];
        for (row, &t) in x.chunks_exact_mut(d).zip(&self.tokens) {
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
        pair.apply(x, y);
    }

    fn rope(&mut self, x: Act, n_heads: usize, freqs: Option<&Vec<f32>>) {
        let c = self.config;
        let w = x.width(c);
        let act = &mut self.acts[x as usize];
        for s in &mut self.seqs {
            let table = s.rope.get_or_insert_with(|| {
                RopeTable::new(
                    s.pos0,
                    s.rows.len(),
                    c.head_dim,
                    c.rope_base,
                    freqs.map(|f| f.as_slice()),
                )
            });
            table.apply(rows_of_mut(act, &s.rows, w), n_heads, c.rope_style);
        }
    }

    fn attend(&mut self, layer: usize) {
        let c = self.config;
        let (qw, kvw) = (Act::Q.width(c), Act::K.width(c));
        let [_, _, q, k, v, att, ..] = &mut self.acts;
        let shape = AttentionShape {
            n_heads: c.n_head,
            n_kv_heads: c.n_kv_head,
            head_dim: c.head_dim,
        };
        for s in &mut self.seqs {
            let r = &s.rows;
            s.cache
                .append(layer, rows_of(k, r, kvw), rows_of(v, r, kvw));
            ops::attention(
                rows_of(q, r, qw),
                s.cache.layer(layer),
                s.pos0,
                shape,
                rows_of_mut(att, r, qw),
            );
        }
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
        let rows: Cow<[f32]> = match want {
            Logits::None => return,
            // The last row of each sequence.
            Logits::Last => self
                .seqs
                .iter()
                .flat_map(|s| &x[(s.rows.end - 1) * d..s.rows.end * d])
                .copied()
                .collect(),
            Logits::All => Cow::Borrowed(&x[..n * d]),
        };
        let m = rows.len() / d;
        let mut normed = vec![0f32; m * d];
        ops::rms_norm(&rows, norm, c.rms_eps, &mut normed);
        self.logits = vec![0f32; m * c.vocab_size];
        head.matmul(&normed, m, &mut self.logits);
    }
}
