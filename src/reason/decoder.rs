//! What the reasoning runtime needs from a backend, and the CPU's answer: prefill the
//! prompt once (LoRA off) while pooling the switcher's features, start N candidates
//! that continue that one prompt cache, and advance the live candidates by one step
//! each, every candidate picking its next token with its own sampler.

use std::sync::Arc;

use crate::engine::PREFILL_CHUNK;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::lora::Adapter;
use crate::model::{Logits, Model};
use crate::sampler::Sampler;

/// One candidate's part of a step.
pub struct Feed<'a> {
    pub candidate: usize,
    /// Tokens appended to the candidate before it picks. Empty only on a candidate's
    /// first step: it then picks from the prompt's last logits.
    pub tokens: &'a [u32],
    pub sampler: &'a mut Sampler,
}

/// A picked token and its log-probability under the raw logits (log-softmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Picked {
    pub token: u32,
    pub logprob: f32,
}

/// A backend running one request's prompt and candidates.
#[allow(async_fn_in_trait)] // used through generics only, never across threads
pub trait Decoder {
    /// Makes room for a prompt of `prompt` tokens and up to `candidates` candidates of
    /// up to `room` tokens of their own each. Called once, first.
    fn reserve(&mut self, prompt: usize, candidates: usize, room: usize) -> Result<()>;

    /// Appends `tokens` of the prompt; returns the sum (d) of their final hidden states
    /// after the final norm when `pool` (else empty). After the prompt's last part, its
    /// last logits are kept for candidates' empty first feeds. The runtime always
    /// prefills with LoRA off (so every mode shares the cache); `lora` is there for
    /// the benchmark's baseline that re-encodes the prompt with the adapter on (it
    /// does not pool).
    async fn prefill(&mut self, tokens: &[u32], pool: bool, lora: bool) -> Result<Vec<f32>>;

    /// Starts `n` candidates, each continuing the whole prompt's cache.
    fn fork(&mut self, n: usize) -> Result<()>;

    /// Appends each feed's tokens to its candidate (the adapter on when `lora`), then
    /// picks each one's next token: one batched step where the backend can.
    async fn step(&mut self, feeds: &mut [Feed<'_>], lora: bool) -> Result<Vec<Picked>>;

    /// Appends `tokens` (at least one) to `candidate` (the adapter on when `lora`) and
    /// returns the final hidden state (d, after the final norm) of the last one: what
    /// the verifier head reads.
    async fn last_hidden(
        &mut self,
        candidate: usize,
        tokens: &[u32],
        lora: bool,
    ) -> Result<Vec<f32>>;

    /// Bytes of KV cache held: the prompt's once, and each candidate's own positions.
    fn kv_bytes(&self) -> usize;
}

/// `log(sum(exp(logits)))`: a token's log-probability is its logit minus this.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max
}

/// Picks from `logits` with `sampler` (no repetition penalty: the runtime sets none,
/// so the logits are not changed) and returns the token with its log-probability.
pub fn pick_from(logits: &mut [f32], sampler: &mut Sampler) -> Picked {
    let norm = log_sum_exp(logits);
    let token = sampler.sample(logits, &[]);
    Picked {
        token,
        logprob: logits[token as usize] - norm,
    }
}

/// The CPU engine's decoder: the prompt's cache is shared ([`KvCache::fork`]) and each
/// candidate runs its own forward pass.
pub struct CpuDecoder<'a> {
    model: &'a Model,
    adapter: Option<&'a Adapter>,
    /// The prompt's cache while it is prefilled.
    prompt: Option<KvCache>,
    shared: Option<Arc<KvCache>>,
    candidates: Vec<KvCache>,
    room: usize,
    last_logits: Vec<f32>,
}

impl<'a> CpuDecoder<'a> {
    pub fn new(model: &'a Model, adapter: Option<&'a Adapter>) -> Self {
        CpuDecoder {
            model,
            adapter,
            prompt: None,
            shared: None,
            candidates: Vec::new(),
            room: 0,
            last_logits: Vec::new(),
        }
    }
}

fn not_ready(what: &str) -> Error {
    Error::InvalidArgument(format!("the decoder was not {what}"))
}

impl Decoder for CpuDecoder<'_> {
    fn reserve(&mut self, prompt: usize, _candidates: usize, room: usize) -> Result<()> {
        self.prompt = Some(KvCache::new(&self.model.config, prompt));
        self.room = room;
        Ok(())
    }

    async fn prefill(&mut self, tokens: &[u32], pool: bool, lora: bool) -> Result<Vec<f32>> {
        let cache = self.prompt.as_mut().ok_or_else(|| not_ready("reserved"))?;
        let adapter = if lora { self.adapter } else { None };
        let pool = pool && adapter.is_none();
        let mut sum = if pool {
            vec![0.0; self.model.config.n_embd]
        } else {
            Vec::new()
        };
        let n_chunks = tokens.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let want = if i + 1 == n_chunks {
                Logits::Last
            } else {
                Logits::None
            };
            if pool {
                let (logits, part) = self.model.forward_pooled(chunk, cache, want)?;
                sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
                self.last_logits = logits;
            } else {
                self.last_logits = self.model.forward_with(chunk, cache, want, adapter)?;
            }
        }
        Ok(sum)
    }

    fn fork(&mut self, n: usize) -> Result<()> {
        let prompt = self.prompt.take().ok_or_else(|| not_ready("prefilled"))?;
        let capacity = prompt.len() + self.room;
        let shared = Arc::new(prompt);
        self.candidates = (0..n)
            .map(|_| KvCache::fork(&shared, capacity))
            .collect::<Result<_>>()?;
        self.shared = Some(shared);
        Ok(())
    }

    async fn step(&mut self, feeds: &mut [Feed<'_>], lora: bool) -> Result<Vec<Picked>> {
        let adapter = if lora { self.adapter } else { None };
        // Every candidate with tokens to feed goes through one batched pass; one with
        // none (its first step) picks from the prompt's last logits.
        let mut fed: Vec<Option<&[u32]>> = vec![None; self.candidates.len()];
        for f in feeds.iter() {
            let slot = fed
                .get_mut(f.candidate)
                .ok_or_else(|| not_ready("forked"))?;
            if slot.replace(f.tokens).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "candidate {} is fed twice in one step",
                    f.candidate
                )));
            }
        }
        let tokens_of: Vec<Option<&[u32]>> =
            fed.iter().map(|t| t.filter(|t| !t.is_empty())).collect();
        let seqs: Vec<(&[u32], &mut KvCache)> = self
            .candidates
            .iter_mut()
            .zip(&tokens_of)
            .filter_map(|(cache, t)| t.map(|t| (t, cache)))
            .collect();
        let vocab = self.model.config.vocab_size;
        let logits = if seqs.is_empty() {
            Vec::new()
        } else {
            self.model.forward_batch(seqs, adapter)?
        };
        // Row of each fed candidate in `logits`: candidates in index order.
        let row_of = |c: usize| tokens_of[..c].iter().flatten().count();
        let mut picked = Vec::with_capacity(feeds.len());
        for f in feeds.iter_mut() {
            let mut l = match tokens_of[f.candidate] {
                None => self.last_logits.clone(),
                Some(_) => logits[row_of(f.candidate) * vocab..][..vocab].to_vec(),
            };
            picked.push(pick_from(&mut l, f.sampler));
        }
        Ok(picked)
    }

    async fn last_hidden(
        &mut self,
        candidate: usize,
        tokens: &[u32],
        lora: bool,
    ) -> Result<Vec<f32>> {
        let adapter = if lora { self.adapter } else { None };
        let cache = self
            .candidates
            .get_mut(candidate)
            .ok_or_else(|| not_ready("forked"))?;
        let Some((last, before)) = tokens.split_last() else {
            return Err(Error::InvalidArgument(
                "no tokens to read a hidden state of".into(),
            ));
        };
        if !before.is_empty() {
            self.model
                .forward_with(before, cache, Logits::None, adapter)?;
        }
        let (_, hidden) = self.model.forward_pooled_with(
            std::slice::from_ref(last),
            cache,
            Logits::None,
            adapter,
        )?;
        Ok(hidden)
    }

    fn kv_bytes(&self) -> usize {
        let prompt = self.shared.as_ref().map_or(0, |s| s.n_bytes());
        prompt + self.candidates.iter().map(KvCache::n_bytes).sum::<usize>()
    }
}
