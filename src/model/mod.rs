//! The transformer: one implementation for every supported architecture.
//!
//! The [`Model`] holds configuration and weights and never changes after loading; the
//! per-sequence state ([`KvCache`]) is passed into [`Model::forward`].

mod config;
mod loader;

pub use config::{Arch, Config};
pub use loader::{BytesSource, FileSource, TensorSource};

use crate::cpu::ops::{self, AttentionShape, RopeTable};
use crate::cpu::Matrix;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::kv_cache::KvCache;
use loader::Loader;

/// A linear layer `y = x W^T + b`.
pub struct Linear {
    /// (out_features, in_features)
    pub weight: Matrix,
    /// (out_features)
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `x` (m, in) -> `y` (m, out).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.weight.matmul(x, m, y);
        if let Some(b) = &self.bias {
            ops::add_bias(y, b);
        }
    }
}

/// Self-attention projections of one block.
pub struct Attention {
    /// (n_head * head_dim, d)
    pub attn_q: Linear,
    /// (n_kv_head * head_dim, d)
    pub attn_k: Linear,
    /// (n_kv_head * head_dim, d)
    pub attn_v: Linear,
    /// (d, n_head * head_dim)
    pub attn_output: Linear,
}

/// SwiGLU feed-forward of one block.
pub struct FeedForward {
    /// (n_ff, d)
    pub ffn_gate: Linear,
    /// (n_ff, d)
    pub ffn_up: Linear,
    /// (d, n_ff)
    pub ffn_down: Linear,
}

/// One transformer block (`blk.N.*` in GGUF).
pub struct Block {
    /// (d)
    pub attn_norm: Vec<f32>,
    pub attn: Attention,
    /// (d)
    pub ffn_norm: Vec<f32>,
    pub ffn: FeedForward,
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (prefill of a chunk that is not the last).
    None,
    /// The last position only: (vocab).
    Last,
    /// Every position of the chunk: (n, vocab).
    All,
}

/// Configuration and weights of a loaded model.
pub struct Model {
    pub config: Config,
    /// (vocab, d)
    pub token_embd: Matrix,
    pub blocks: Vec<Block>,
    /// (d)
    pub output_norm: Vec<f32>,
    /// (vocab, d); `None` when the embedding is tied to the output head.
    pub output: Option<Matrix>,
    /// (head_dim / 2) frequency divisors of Llama 3 style RoPE scaling.
    pub rope_freqs: Option<Vec<f32>>,
}

impl Model {
    /// Loads the weights named by `gguf` from `source`, checking every name and shape.
    pub fn load(gguf: &Gguf, source: &mut dyn TensorSource) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let c = &config;
        let mut l = Loader::new(gguf, source, c.arch.name());
        let (d, kv) = (c.n_embd, c.kv_dim());
        let qkv_bias = c.arch == Arch::Qwen2;
        let token_embd = l.matrix("token_embd.weight", c.vocab_size, d)?;
        let mut blocks = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = |n: &str| format!("blk.{i}.{n}");
            blocks.push(Block {
                attn_norm: l.vector(&p("attn_norm.weight"), d)?,
                attn: Attention {
                    attn_q: l.linear(&p("attn_q"), d, d, qkv_bias)?,
                    attn_k: l.linear(&p("attn_k"), kv, d, qkv_bias)?,
                    attn_v: l.linear(&p("attn_v"), kv, d, qkv_bias)?,
                    attn_output: l.linear(&p("attn_output"), d, d, false)?,
                },
                ffn_norm: l.vector(&p("ffn_norm.weight"), d)?,
                ffn: FeedForward {
                    ffn_gate: l.linear(&p("ffn_gate"), c.n_ff, d, false)?,
                    ffn_up: l.linear(&p("ffn_up"), c.n_ff, d, false)?,
                    ffn_down: l.linear(&p("ffn_down"), d, c.n_ff, false)?,
                },
            });
        }
        let output_norm = l.vector("output_norm.weight", d)?;
        let output = match gguf.tensor("output.weight") {
            Some(_) => Some(l.matrix("output.weight", c.vocab_size, d)?),
            None => None,
        };
        let rope_freqs = match gguf.tensor("rope_freqs.weight") {
            Some(_) => Some(l.vector("rope_freqs.weight", c.head_dim / 2)?),
            None => None,
        };
        Ok(Model {
            config,
            token_embd,
            blocks,
            output_norm,
            output,
            rope_freqs,
        })
    }

    /// Bytes of all weights.
    pub fn n_bytes(&self) -> usize {
        let lin = |l: &Linear| l.weight.n_bytes() + l.bias.as_ref().map_or(0, |b| b.len() * 4);
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                lin(&b.attn.attn_q)
                    + lin(&b.attn.attn_k)
                    + lin(&b.attn.attn_v)
                    + lin(&b.attn.attn_output)
                    + lin(&b.ffn.ffn_gate)
                    + lin(&b.ffn.ffn_up)
                    + lin(&b.ffn.ffn_down)
                    + (b.attn_norm.len() + b.ffn_norm.len()) * 4
            })
            .sum();
        blocks + self.token_embd.n_bytes() + self.output.as_ref().map_or(0, |m| m.n_bytes())
    }

    /// The output head: `output.weight`, or the token embedding when tied.
    fn head(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Runs `tokens` (the next positions of the sequence in `cache`) through the model,
    /// appends their keys and values to `cache`, and returns the requested logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Vec<f32>> {
        let c = &self.config;
        let (n, d, kv) = (tokens.len(), c.n_embd, c.kv_dim());
        if n == 0 {
            return Err(Error::InvalidArgument(
                "forward needs at least one token".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        cache.check_room(n)?;
        let pos0 = cache.len();

        // 1. Embedding lookup: x (n, d).
        let mut x = vec![0f32; n * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            self.token_embd.row_to_f32(t as usize, row);
        }

        let rope = RopeTable::new(pos0, n, c.head_dim, c.rope_base, self.rope_freqs.as_deref());
        let shape = AttentionShape {
            n_heads: c.n_head,
            n_kv_heads: c.n_kv_head,
            head_dim: c.head_dim,
        };
        let mut h = vec![0f32; n * d]; // (n, d) normed input
        let mut q = vec![0f32; n * d]; // (n, n_head * head_dim)
        let mut k = vec![0f32; n * kv]; // (n, kv)
        let mut v = vec![0f32; n * kv]; // (n, kv)
        let mut att = vec![0f32; n * d]; // (n, d)
        let mut proj = vec![0f32; n * d]; // (n, d)
        let mut gate = vec![0f32; n * c.n_ff]; // (n, n_ff)
        let mut up = vec![0f32; n * c.n_ff]; // (n, n_ff)

        for (i, b) in self.blocks.iter().enumerate() {
            // 2. Attention: norm, q/k/v, RoPE, append to cache, attend, project, residual.
            ops::rms_norm(&x, &b.attn_norm, c.rms_eps, &mut h);
            b.attn.attn_q.forward(&h, n, &mut q);
            b.attn.attn_k.forward(&h, n, &mut k);
            b.attn.attn_v.forward(&h, n, &mut v);
            rope.apply(&mut q, c.n_head, c.rope_style);
            rope.apply(&mut k, c.n_kv_head, c.rope_style);
            cache.append(i, &k, &v);
            let layer = cache.layer(i);
            ops::attention(&q, &layer.k, &layer.v, pos0, shape, &mut att);
            b.attn.attn_output.forward(&att, n, &mut proj);
            ops::add_in_place(&mut x, &proj);

            // 3. Feed-forward: norm, SwiGLU, down projection, residual.
            ops::rms_norm(&x, &b.ffn_norm, c.rms_eps, &mut h);
            b.ffn.ffn_gate.forward(&h, n, &mut gate);
            b.ffn.ffn_up.forward(&h, n, &mut up);
            ops::swiglu_in_place(&mut gate, &up);
            b.ffn.ffn_down.forward(&gate, n, &mut proj);
            ops::add_in_place(&mut x, &proj);
        }
        cache.commit(n);

        // 4. Final norm and output head for the requested positions.
        let rows = match want {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => &x[(n - 1) * d..],
            Logits::All => &x[..],
        };
        let m = rows.len() / d;
        let mut normed = vec![0f32; m * d];
        ops::rms_norm(rows, &self.output_norm, c.rms_eps, &mut normed);
        let mut logits = vec![0f32; m * c.vocab_size];
        self.head().matmul(&normed, m, &mut logits);
        Ok(logits)
    }
}
