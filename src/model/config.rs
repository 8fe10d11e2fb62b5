//! Model hyperparameters, read once from GGUF metadata and validated.

use crate::cpu::ops::RopeStyle;
use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// Architectures with one shared transformer implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// SmolLM2, Llama 3.x: no biases, interleaved RoPE.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v biases, NeoX RoPE.
    Qwen2,
}

impl Arch {
    /// The GGUF `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Halves,
        }
    }
}

/// Validated hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    /// Model width `d`.
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// SwiGLU hidden width.
    pub n_ff: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    pub rope_base: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
}

impl Config {
    /// Reads and checks the hyperparameters of a GGUF model.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch_name = g.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| g.u64(&key(k)).map(|v| v as usize);
        let n_embd = usize_key("embedding_length")?;
        let n_head = usize_key("attention.head_count")?;
        let n_kv_head = match g.get(&key("attention.head_count_kv")) {
            Some(_) => usize_key("attention.head_count_kv")?,
            None => n_head,
        };
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(Error::UnsupportedConfig(format!(
                "{n_head} heads and {n_kv_head} KV heads do not divide a width of {n_embd}"
            )));
        }
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => usize_key("attention.key_length")?,
            None => n_embd / n_head,
        };
        if head_dim.checked_mul(n_head) != Some(n_embd) || head_dim % 2 != 0 {
            return Err(Error::UnsupportedConfig(format!(
                "head size {head_dim} x {n_head} heads must equal the width {n_embd} and be even"
            )));
        }
        if let Some(v) = g.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(Error::UnsupportedConfig(format!(
                    "partial rotary embedding ({v:?} of {head_dim} dimensions) is not supported"
                )));
            }
        }
        let vocab_size = match g.get(&key("vocab_size")) {
            Some(_) => usize_key("vocab_size")?,
            None => g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| Error::MissingTensor {
                    name: "token_embd.weight".into(),
                    arch: arch_name.into(),
                })? as usize,
        };
        let rope_base = match g.get(&key("rope.freq_base")) {
            Some(_) => g.f64(&key("rope.freq_base"))? as f32,
            None => 10_000.0,
        };
        let cfg = Config {
            arch,
            n_layer: usize_key("block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: usize_key("feed_forward_length")?,
            vocab_size,
            context_length: usize_key("context_length")?,
            rope_base,
            rope_style: arch.rope_style(),
            rms_eps: g.f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
        };
        // Every layer has at least 9 tensors: a larger count cannot be backed by this file.
        if cfg.n_layer.saturating_mul(9) > g.tensors.len() {
            return Err(Error::MissingTensor {
                name: format!("blk.{}.attn_norm.weight", g.tensors.len() / 9),
                arch: arch_name.into(),
            });
        }
        if cfg.n_layer == 0 || cfg.n_ff == 0 || cfg.vocab_size == 0 || cfg.context_length == 0 {
            return Err(Error::UnsupportedConfig(format!(
                "zero-sized hyperparameter in {cfg:?}"
            )));
        }
        Ok(cfg)
    }

    /// Width of the K (or V) projection: `n_kv_head * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Fails unless `tokens` is non-empty and every id is inside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "forward needs at least one token".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        Ok(())
    }
}
