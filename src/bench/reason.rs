//! The reasoning runtime's benchmark (`edge-reason bench-reason`, the browser's
//! `bench({reason: ...})`): what the shared prompt cache and batched candidates buy,
//! measured side by side in one run on one backend.
//!
//! - Time to the first reasoning token for a `prompt_tokens` prompt. Both paths first
//!   prefill the prompt with the base model (the switcher needs it). Shared: the
//!   reasoning candidate continues that cache (think prefix, adapter on, one pick).
//!   Re-encoding (what an engine without a shared cache must do): the prompt and the
//!   think prefix are encoded again with the adapter on, then one pick.
//! - KV bytes of `n` candidates after `steps` steps each: the shared layout
//!   (P + N*T positions) against N separate caches (N*(P+T)).
//! - Decode step time with 1 and with `n` candidates over the shared prompt, with the
//!   adapter on and off: one batched pass on either backend (on the CPU every weight
//!   matrix is read once for all N candidates' rows).
//!
//! With no trained adapter given, a seeded random one of rank `rank` on every linear
//! layer stands in: the timing does not depend on its values. Medians of `runs`, after
//! an untimed warm-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{median, pseudo_random_tokens};
use crate::engine::now_seconds;
use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::reason::{Decoder, Feed, MAX_CANDIDATES};
use crate::runner::{LoadedAdapter, Runner};
use crate::sampler::{Sampler, SamplerConfig};

/// What to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasonBenchOptions {
    pub prompt_tokens: usize,
    /// Candidates of the KV and step measurements.
    pub n: usize,
    /// Decode steps timed per run.
    pub steps: usize,
    pub runs: usize,
    /// Rank of the random adapter used when none is loaded.
    pub rank: usize,
    /// Fed before the first reasoning token (the runtime's default).
    pub think_prefix: String,
}

impl Default for ReasonBenchOptions {
    fn default() -> Self {
        ReasonBenchOptions {
            prompt_tokens: 500,
            n: 8,
            steps: 16,
            runs: 3,
            rank: 16,
            think_prefix: "<think>\n".into(),
        }
    }
}

/// Decode step time with and without the adapter.
#[derive(Debug, Clone, Serialize)]
pub struct StepTimes {
    pub lora_ms: f64,
    pub base_ms: f64,
    /// Tokens per second of all candidates together, adapter on.
    pub lora_tok_s: f64,
}

/// What was measured (medians).
#[derive(Debug, Clone, Serialize)]
pub struct ReasonBenchReport {
    pub backend: &'static str,
    pub device: String,
    /// "trained" (loaded) or "random rank R".
    pub lora: String,
    pub lora_bytes: usize,
    pub prompt_tokens: usize,
    pub runs: usize,
    /// The base prefill of the prompt (LoRA off, pooling the switcher's features).
    pub prefill_ms: f64,
    /// After that prefill: the first reasoning token from the shared cache...
    pub first_token_shared_ms: f64,
    /// ...and by re-encoding the prompt with the adapter on.
    pub first_token_reencode_ms: f64,
    /// From the request: `prefill_ms` + each of the above.
    pub ttft_shared_ms: f64,
    pub ttft_reencode_ms: f64,
    /// `ttft_reencode_ms / ttft_shared_ms`.
    pub ttft_speedup: f64,
    pub n: usize,
    /// Tokens each of the `n` candidates holds of its own at the KV measurement.
    pub candidate_tokens: usize,
    /// KV bytes of `n` candidates sharing the prompt's cache.
    pub kv_bytes_shared: usize,
    /// KV bytes `n` separate caches would hold.
    pub kv_bytes_copies: usize,
    /// Keys: 1 and `n`.
    pub step: BTreeMap<String, StepTimes>,
    /// Tokens per second of `n` candidates over that of one (adapter on).
    pub n_speedup: f64,
}

/// Runs the benchmark on `runner` with `adapter` (a random one when `None`).
pub async fn run(
    runner: &Runner,
    adapter: Option<&LoadedAdapter>,
    o: &ReasonBenchOptions,
) -> Result<ReasonBenchReport> {
    if o.prompt_tokens == 0 || o.steps == 0 || !(1..=MAX_CANDIDATES).contains(&o.n) {
        return Err(Error::InvalidArgument(format!(
            "the reasoning benchmark needs a prompt, steps, and 1 to {MAX_CANDIDATES} candidates"
        )));
    }
    let owned;
    let (adapter, lora) = match adapter {
        Some(a) => (a, "trained".to_string()),
        None => {
            owned = runner.load_adapter(Adapter::random(runner.config(), o.rank, 1))?;
            (&owned, format!("random rank {}", o.rank))
        }
    };
    let runs = o.runs.max(1);
    let prompt = pseudo_random_tokens(o.prompt_tokens, runner.config().vocab_size);
    let prefix = runner.tokenizer().encode(&o.think_prefix, true)?;
    if prefix.is_empty() {
        return Err(Error::InvalidArgument("the think prefix is empty".into()));
    }
    let context = runner.config().context_length;
    let room = prefix.len() + (runs + 1) * o.steps + 1;
    if o.prompt_tokens + prefix.len() + room > context {
        return Err(Error::ContextOverflow {
            tokens: o.prompt_tokens + prefix.len() + room,
            capacity: context,
        });
    }

    // 1. Time to the first reasoning token, shared vs re-encoded (run 0 warms up).
    let (mut prefill, mut shared, mut reencode) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let mut d = runner.decoder(Some(adapter))?;
        d.reserve(prompt.len(), 1, room)?;
        let t0 = now_seconds();
        d.prefill(&prompt, true, false).await?;
        let t1 = now_seconds();
        d.fork(1)?;
        step(&mut d, std::slice::from_ref(&prefix), true).await?;
        let t2 = now_seconds();

        let mut d = runner.decoder(Some(adapter))?;
        d.reserve(prompt.len() + prefix.len(), 1, room)?;
        let mut again = prompt.clone();
        again.extend(&prefix[..prefix.len() - 1]);
        let t3 = now_seconds();
        d.prefill(&again, false, true).await?;
        d.fork(1)?;
        step(&mut d, &[prefix[prefix.len() - 1..].to_vec()], true).await?;
        let t4 = now_seconds();
        if run > 0 {
            prefill.push((t1 - t0) * 1000.0);
            shared.push((t2 - t1) * 1000.0);
            reencode.push((t4 - t3) * 1000.0);
        }
    }
    let (prefill_ms, shared_ms, reencode_ms) = (median(prefill), median(shared), median(reencode));

    // 2. Decode steps of 1 and n candidates, adapter on and off; KV bytes of n.
    let mut times = BTreeMap::new();
    let mut kv = (0, 0);
    for m in [1, o.n] {
        let mut t = [0.0; 2];
        for (i, lora) in [true, false].into_iter().enumerate() {
            let mut d = runner.decoder(Some(adapter))?;
            d.reserve(prompt.len(), m, room)?;
            d.prefill(&prompt, false, false).await?;
            d.fork(m)?;
            let mut next = step(&mut d, &vec![prefix.clone(); m], lora).await?;
            let mut per_run = Vec::new();
            for run in 0..=runs {
                let t0 = now_seconds();
                for _ in 0..o.steps {
                    let feeds: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
                    next = step(&mut d, &feeds, lora).await?;
                }
                if run > 0 {
                    per_run.push((now_seconds() - t0) * 1000.0 / o.steps as f64);
                }
            }
            t[i] = median(per_run);
            if m == o.n && lora {
                // Each candidate fed the prefix and (runs + 1) * steps tokens.
                let own = prefix.len() + (runs + 1) * o.steps;
                let shared = d.kv_bytes();
                let per_position = shared / (prompt.len() + m * own);
                kv = (shared, m * (prompt.len() + own) * per_position);
            }
        }
        let step = StepTimes {
            lora_ms: t[0],
            base_ms: t[1],
            lora_tok_s: m as f64 * 1000.0 / t[0],
        };
        times.insert(m.to_string(), step);
    }
    let tok_s = |m: usize| times[&m.to_string()].lora_tok_s;
    Ok(ReasonBenchReport {
        backend: runner.backend(),
        device: runner.adapter(),
        lora,
        lora_bytes: adapter.n_bytes(),
        prompt_tokens: o.prompt_tokens,
        runs,
        prefill_ms,
        first_token_shared_ms: shared_ms,
        first_token_reencode_ms: reencode_ms,
        ttft_shared_ms: prefill_ms + shared_ms,
        ttft_reencode_ms: prefill_ms + reencode_ms,
        ttft_speedup: (prefill_ms + reencode_ms) / (prefill_ms + shared_ms),
        n: o.n,
        candidate_tokens: prefix.len() + (runs + 1) * o.steps,
        kv_bytes_shared: kv.0,
        kv_bytes_copies: kv.1,
        n_speedup: tok_s(o.n) / tok_s(1),
        step: times,
    })
}

/// One greedy step of candidates `0..feeds.len()`, each fed its tokens; their picks.
async fn step<D: Decoder>(d: &mut D, feeds: &[Vec<u32>], lora: bool) -> Result<Vec<u32>> {
    let mut samplers = feeds
        .iter()
        .map(|_| Sampler::new(SamplerConfig::default()))
        .collect::<Result<Vec<_>>>()?;
    let mut f: Vec<Feed> = feeds
        .iter()
        .zip(samplers.iter_mut())
        .enumerate()
        .map(|(candidate, (tokens, sampler))| Feed {
            candidate,
            tokens,
            sampler,
        })
        .collect();
    Ok(d.step(&mut f, lora)
        .await?
        .iter()
        .map(|p| p.token)
        .collect())
}
