//! The transformer: one implementation for every supported architecture and backend.
//!
//! The [`Model`] holds configuration and weights and never changes after loading; the
//! per-sequence state (a KV cache) lives in the [`Pass`] that runs it. [`Model::run`]
//! is the only description of the forward pass; backends implement its ops.

mod backend;
mod config;
mod loader;

pub use backend::{lora_of, Act, Backend, LoraLayers, Pass, Upload};
pub use config::{Arch, Config};
pub use loader::{BytesSource, FileSource, TensorSource};

use crate::cpu::{Cpu, CpuPass};
use crate::error::Result;
use crate::gguf::Gguf;
use crate::kv_cache::KvCache;
use crate::lora::{Adapter, Target};
use loader::Loader;

/// A linear layer `y = x W^T + b`.
pub struct Linear<B: Backend> {
    /// (out_features, in_features)
    pub weight: B::Matrix,
    /// (out_features)
    pub bias: Option<B::Vector>,
}

/// Self-attention projections of one block.
pub struct Attention<B: Backend> {
    /// (n_head * head_dim, d)
    pub attn_q: Linear<B>,
    /// (n_kv_head * head_dim, d)
    pub attn_k: Linear<B>,
    /// (n_kv_head * head_dim, d)
    pub attn_v: Linear<B>,
    /// (d, n_head * head_dim)
    pub attn_output: Linear<B>,
}

/// SwiGLU feed-forward of one block.
pub struct FeedForward<B: Backend> {
    /// (n_ff, d)
    pub ffn_gate: Linear<B>,
    /// (n_ff, d)
    pub ffn_up: Linear<B>,
    /// (d, n_ff)
    pub ffn_down: Linear<B>,
}

/// One transformer block (`blk.N.*` in GGUF).
pub struct Block<B: Backend> {
    /// (d)
    pub attn_norm: B::Vector,
    pub attn: Attention<B>,
    /// (d)
    pub ffn_norm: B::Vector,
    pub ffn: FeedForward<B>,
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Logits {
    /// None (prefill of a chunk that is not the last).
    #[default]
    None,
    /// The last position only: (vocab).
    Last,
    /// Every position of the chunk: (n, vocab).
    All,
}

/// Configuration and weights of a loaded model, on backend `B`.
pub struct Model<B: Backend = Cpu> {
    pub config: Config,
    /// (vocab, d)
    pub token_embd: B::Matrix,
    pub blocks: Vec<Block<B>>,
    /// (d)
    pub output_norm: B::Vector,
    /// (vocab, d); `None` when the embedding is tied to the output head.
    pub output: Option<B::Matrix>,
    /// (head_dim / 2) frequency divisors of Llama 3 style RoPE scaling.
    pub rope_freqs: Option<B::Vector>,
}

/// Reads one linear layer and hands it to `up`.
fn load_linear<B: Backend>(
    l: &mut Loader,
    up: &mut dyn Upload<B>,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear<B>> {
    let cpu = l.linear(prefix, out, inp, bias)?;
    Ok(Linear {
        weight: up.matrix(&format!("{prefix}.weight"), cpu.weight)?,
        bias: match cpu.bias {
            Some(b) => Some(up.vector(&format!("{prefix}.bias"), b)?),
            None => None,
        },
    })
}

impl Model<Cpu> {
    /// Loads the weights named by `gguf` from `source` for the CPU.
    pub fn load(gguf: &Gguf, source: &mut dyn TensorSource) -> Result<Self> {
        Self::load_with(gguf, source, &mut Cpu)
    }

    /// Runs `tokens` (the next positions of the sequence in `cache`) through the model,
    /// appends their keys and values to `cache`, and returns the requested logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Vec<f32>> {
        self.forward_with(tokens, cache, want, None)
    }

    /// [`Model::forward`] that also returns the sum (d) over `tokens` of the final hidden
    /// states after the final norm: the switcher's features, at no extra pass.
    pub fn forward_pooled(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.forward_pooled_with(tokens, cache, want, None)
    }

    /// [`Model::forward_pooled`] with `adapter` on these tokens.
    pub fn forward_pooled_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
        adapter: Option<&Adapter>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_input(tokens, cache, adapter)?;
        let mut pass = CpuPass::new(&self.config, tokens, cache).pooling();
        self.run_cpu(&mut pass, want, adapter);
        let (logits, pooled) = pass.finish_pooled();
        Ok((logits, pooled.unwrap_or_default()))
    }

    /// [`Model::forward`] with `adapter` on (LoRA on these tokens only: the cache may
    /// hold a prompt encoded without it).
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
        adapter: Option<&Adapter>,
    ) -> Result<Vec<f32>> {
        self.check_input(tokens, cache, adapter)?;
        let mut pass = CpuPass::new(&self.config, tokens, cache);
        self.run_cpu(&mut pass, want, adapter);
        Ok(pass.finish())
    }
}

impl Model<Cpu> {
    /// [`Model::run_with`] on one of rayon's threads when the pool has several: its
    /// matmuls then fork from inside the pool, where a fork costs a push onto a deque
    /// and the forking thread works at once, instead of each one sending its job into
    /// the pool from outside and sleeping until it is done (in the browser, ~80 us of
    /// Web Worker wake-ups each time). One such hand-over per pass instead of ~240.
    fn run_cpu(&self, pass: &mut CpuPass, want: Logits, adapter: Option<&Adapter>) {
        let lora = adapter.map(|a| a.layers.as_slice());
        if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
            rayon::scope(|_| self.run_with(pass, want, lora));
        } else {
            self.run_with(pass, want, lora);
        }
    }

    /// `tokens` are in the vocabulary and fit `cache`, and `adapter` fits the model.
    fn check_input(
        &self,
        tokens: &[u32],
        cache: &KvCache,
        adapter: Option<&Adapter>,
    ) -> Result<()> {
        self.config.check_tokens(tokens)?;
        cache.check_room(tokens.len())?;
        match adapter {
            Some(a) => a.check_fits(&self.config),
            None => Ok(()),
        }
    }

    /// One step of several sequences at once (e.g. the candidates of a request): each
    /// `(tokens, cache)` appends its tokens to its own cache; returns (sequences,
    /// vocab) logits of each one's last token. The weights are read once for all of
    /// them, so k sequences cost much less than k passes.
    pub fn forward_batch(
        &self,
        seqs: Vec<(&[u32], &mut KvCache)>,
        adapter: Option<&Adapter>,
    ) -> Result<Vec<f32>> {
        for (tokens, cache) in &seqs {
            self.check_input(tokens, cache, adapter)?;
        }
        let mut pass = CpuPass::batch(&self.config, seqs);
        self.run_cpu(&mut pass, Logits::Last, adapter);
        Ok(pass.finish())
    }
}

impl<B: Backend> Model<B> {
    /// Loads the weights named by `gguf` from `source`, checking every name and shape,
    /// and hands each tensor to `up` as soon as it is read.
    pub fn load_with(
        gguf: &Gguf,
        source: &mut dyn TensorSource,
        up: &mut dyn Upload<B>,
    ) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let c = &config;
        let mut l = Loader::new(gguf, source, c.arch.name());
        let (d, kv) = (c.n_embd, c.kv_dim());
        let qkv_bias = c.arch == Arch::Qwen2;
        let token_embd = up.matrix(
            "token_embd.weight",
            l.matrix("token_embd.weight", c.vocab_size, d)?,
        )?;
        let mut blocks = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = |n: &str| format!("blk.{i}.{n}");
            let mut vector = |l: &mut Loader, name: String, len| -> Result<B::Vector> {
                let v = l.vector(&name, len)?;
                up.vector(&name, v)
            };
            let attn_norm = vector(&mut l, p("attn_norm.weight"), d)?;
            let ffn_norm = vector(&mut l, p("ffn_norm.weight"), d)?;
            let mut linear = |name: &str, out, inp, bias| {
                load_linear(&mut l, &mut *up, &p(name), out, inp, bias)
            };
            blocks.push(Block {
                attn_norm,
                attn: Attention {
                    attn_q: linear("attn_q", d, d, qkv_bias)?,
                    attn_k: linear("attn_k", kv, d, qkv_bias)?,
                    attn_v: linear("attn_v", kv, d, qkv_bias)?,
                    attn_output: linear("attn_output", d, d, false)?,
                },
                ffn_norm,
                ffn: FeedForward {
                    ffn_gate: linear("ffn_gate", c.n_ff, d, false)?,
                    ffn_up: linear("ffn_up", c.n_ff, d, false)?,
                    ffn_down: linear("ffn_down", d, c.n_ff, false)?,
                },
            });
        }
        let output_norm = up.vector("output_norm.weight", l.vector("output_norm.weight", d)?)?;
        let output = match gguf.tensor("output.weight") {
            Some(_) => {
                Some(up.matrix("output.weight", l.matrix("output.weight", c.vocab_size, d)?)?)
            }
            None => None,
        };
        let rope_freqs = match gguf.tensor("rope_freqs.weight") {
            Some(_) => Some(up.vector(
                "rope_freqs.weight",
                l.vector("rope_freqs.weight", c.head_dim / 2)?,
            )?),
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
        let lin = |l: &Linear<B>| {
            B::matrix_bytes(&l.weight) + l.bias.as_ref().map_or(0, |b| B::vector_bytes(b))
        };
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
                    + B::vector_bytes(&b.attn_norm)
                    + B::vector_bytes(&b.ffn_norm)
            })
            .sum();
        blocks
            + B::matrix_bytes(&self.token_embd)
            + self.output.as_ref().map_or(0, |m| B::matrix_bytes(m))
    }

    /// The output head: `output.weight`, or the token embedding when tied.
    pub fn head(&self) -> &B::Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// The forward pass: runs the rows of `pass` through every block and the head.
    pub fn run(&self, pass: &mut impl Pass<B>, want: Logits) {
        self.run_with(pass, want, None)
    }

    /// [`Model::run`] with a LoRA adapter's updates on the linear layers it targets.
    pub fn run_with<P: Pass<B>>(&self, pass: &mut P, want: Logits, lora: Option<&LoraLayers<B>>) {
        let c = &self.config;
        let freqs = self.rope_freqs.as_ref();
        // `out <- x W^T + b`, plus the adapter's `B (A x)` where it has one.
        let linear = |pass: &mut P, w: &Linear<B>, x: Act, out: Act, layer: usize, t: Target| {
            pass.linear(w, x, out);
            if let Some(update) = lora_of::<B>(lora, layer, t) {
                pass.lora(update, x, out);
            }
        };

        // 1. Embedding lookup: X (n, d).
        pass.embed(&self.token_embd);

        for (i, b) in self.blocks.iter().enumerate() {
            // 2. Attention: norm, q/k/v, RoPE, append to cache, attend, project, residual.
            pass.rms_norm(Act::X, &b.attn_norm, Act::H);
            linear(pass, &b.attn.attn_q, Act::H, Act::Q, i, Target::Q);
            linear(pass, &b.attn.attn_k, Act::H, Act::K, i, Target::K);
            linear(pass, &b.attn.attn_v, Act::H, Act::V, i, Target::V);
            pass.rope(Act::Q, c.n_head, freqs);
            pass.rope(Act::K, c.n_kv_head, freqs);
            pass.attend(i);
            linear(pass, &b.attn.attn_output, Act::Att, Act::Proj, i, Target::O);
            pass.add(Act::X, Act::Proj);

            // 3. Feed-forward: norm, SwiGLU, down projection, residual.
            pass.rms_norm(Act::X, &b.ffn_norm, Act::H);
            linear(pass, &b.ffn.ffn_gate, Act::H, Act::Gate, i, Target::Gate);
            linear(pass, &b.ffn.ffn_up, Act::H, Act::Up, i, Target::Up);
            pass.swiglu();
            linear(pass, &b.ffn.ffn_down, Act::Gate, Act::Proj, i, Target::Down);
            pass.add(Act::X, Act::Proj);
        }

        // 4. Final norm and output head for the requested positions.
        pass.output(&self.output_norm, self.head(), want);
    }
}
