//! The speed benchmark behind `edge-reason bench` and the browser's bench page: one
//! code path, one JSON shape, so native and browser figures compare directly.
//!
//! - prefill: `prefill_tokens` pseudo-random tokens into an empty cache (llama-bench's
//!   pp test);
//! - decode: `decode_tokens` single-token steps after a one-token prompt (its tg test);
//! - on a GPU, the decode step time of M streams over a shared 32-token prefix (or
//!   `prefill_tokens`, when fewer) for each M in `streams`: one pass, one submission,
//!   M ids read back; and the device bytes of the weights and of a session of a
//!   `prefill_tokens` prompt with M candidates.
//!
//! Every figure is the median of `runs`, after an untimed warm-up (page faults, thread
//! start-up and pipeline compilation are not timed).

pub mod reason;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::{now_seconds, Sequence};
use crate::error::{Error, Result};
use crate::gpu::{GpuModel, GpuSession, ProfileReport, Profiler};
use crate::model::Logits;
use crate::runner::Runner;

/// What to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchOptions {
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub runs: usize,
    /// Stream counts whose decode step time is measured (GPU only).
    pub streams: Vec<usize>,
    /// Also time every kernel of one decode step per stream count (GPU with timestamp
    /// queries only).
    pub profile: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prefill_tokens: 512,
            decode_tokens: 128,
            runs: 3,
            streams: vec![1, 2, 4, 8],
            profile: false,
        }
    }
}

/// What was measured (medians).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// "cpu" or "gpu".
    pub backend: &'static str,
    pub adapter: String,
    /// How the KV cache holds values: "f32", "f16" or "f16-packed" (f16 in u32 words,
    /// without `shader-f16`).
    pub kv_cache: &'static str,
    pub runs: usize,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// Milliseconds of one decode step per stream count (GPU only; keys are M).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_step_ms: BTreeMap<String, f64>,
    /// Device bytes per stream count M (GPU only; keys are M): the weights plus every
    /// buffer of a session with a `prefill_tokens` prompt and M candidates of
    /// `decode_tokens` each (KV cache, activations, logits, attention partials).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gpu_buffer_bytes: BTreeMap<String, u64>,
    /// Whether the kernels use subgroup operations (GPU only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subgroups: Option<bool>,
    /// Bytes one decode token reads: every weight once, plus the KV cache at the
    /// decode's mean position (GPU only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_bytes_per_token: Option<u64>,
    /// `decode_bytes_per_token * decode_tok_s`, in GB/s: compare with the device's
    /// memory bandwidth (GPU only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_gb_s: Option<f64>,
    /// Per stream count, where one decode step's time goes (with `profile`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, StepProfile>,
}

/// One profiled decode step.
#[derive(Debug, Clone, Serialize)]
pub struct StepProfile {
    /// The unprofiled step time (as in `stream_step_ms`).
    pub step_ms: f64,
    /// What the step costs beyond its kernels' own time, per dispatch.
    pub overhead_ms_per_dispatch: f64,
    #[serde(flatten)]
    pub kernels: ProfileReport,
}

/// Tokens of the shared prefix the stream steps attend to (fewer when the benchmark
/// prefills fewer).
const STREAM_PREFIX: usize = 32;

/// Runs the benchmark on `runner`.
pub async fn run(runner: &Runner, o: &BenchOptions) -> Result<BenchReport> {
    if o.prefill_tokens == 0 || o.decode_tokens == 0 {
        return Err(Error::InvalidArgument(
            "the benchmark needs at least 1 prefill and 1 decode token".into(),
        ));
    }
    let runs = o.runs.max(1);
    let prompt = pseudo_random_tokens(o.prefill_tokens, runner.config().vocab_size);

    let warm = &prompt[..prompt.len().min(32)];
    runner.sequence(warm.len())?.feed_greedy(warm).await?;
    runner.sequence(1)?.feed_greedy(&prompt[..1]).await?;
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut seq = runner.sequence(prompt.len())?;
        let t0 = now_seconds();
        seq.feed_greedy(&prompt).await?;
        pre.push(prompt.len() as f64 / (now_seconds() - t0));

        let mut seq = runner.sequence(o.decode_tokens + 1)?;
        let mut next = seq.feed_greedy(&prompt[..1]).await?;
        let t0 = now_seconds();
        for _ in 0..o.decode_tokens {
            next = seq.feed_greedy(&[next]).await?;
        }
        dec.push(o.decode_tokens as f64 / (now_seconds() - t0));
    }

    let decode_tok_s = median(dec);
    let mut stream_step_ms = BTreeMap::new();
    let mut gpu_buffer_bytes = BTreeMap::new();
    let mut profile = BTreeMap::new();
    let (mut decode_bytes_per_token, mut decode_gb_s, mut subgroups) = (None, None, None);
    let mut kv_cache = "f32";
    if let Runner::Gpu(g) = runner {
        let steps = o.decode_tokens.clamp(1, 32);
        let mut profiler = if o.profile {
            Some(Profiler::new(&g.gm.ctx, 1024)?)
        } else {
            None
        };
        // One prefill of the shared prefix serves every width and run: forking resets
        // the streams and keeps the prefix.
        let widest = o.streams.iter().copied().max().unwrap_or(0);
        let mut shared = match widest {
            0 => None,
            m => Some(prefixed_session(&g.gm, o.prefill_tokens, m, steps + 1).await?),
        };
        for &m in &o.streams {
            let sized = GpuSession::new(&g.gm, o.prefill_tokens.max(1), m, o.decode_tokens.max(1))?;
            gpu_buffer_bytes.insert(m.to_string(), g.gm.weight_bytes + sized.buffer_bytes());
            drop(sized);
            let s = shared.as_mut().expect("a session for the widest width");
            let ms = stream_step_ms_median(&g.gm, s, m, steps, runs).await?;
            stream_step_ms.insert(m.to_string(), ms);
            if let Some(p) = profiler.as_mut() {
                let kernels = profile_step(&g.gm, s, m, p).await?;
                let overhead = (ms - kernels.kernel_ms) / kernels.dispatches.max(1) as f64;
                let step = StepProfile {
                    step_ms: ms,
                    overhead_ms_per_dispatch: overhead,
                    kernels,
                };
                profile.insert(m.to_string(), step);
            }
        }
        let c = runner.config();
        let mean_keys = o.decode_tokens.div_ceil(2);
        let kv = 2 * c.n_layer * mean_keys * g.gm.kv_store.row_bytes(c.kv_dim(), c.n_kv_head);
        let bytes = g.gm.weight_bytes + kv as u64;
        decode_bytes_per_token = Some(bytes);
        subgroups = Some(g.gm.kernels.subgroups());
        kv_cache = g.gm.kv_store.name();
        decode_gb_s = Some(bytes as f64 * decode_tok_s / 1e9);
    }
    Ok(BenchReport {
        backend: runner.backend(),
        adapter: runner.adapter(),
        kv_cache,
        runs,
        prefill_tokens: o.prefill_tokens,
        prefill_tok_s: median(pre),
        decode_tokens: o.decode_tokens,
        decode_tok_s,
        stream_step_ms,
        gpu_buffer_bytes,
        subgroups,
        decode_bytes_per_token,
        decode_gb_s,
        profile,
    })
}

/// Median milliseconds of one decode step for `m` streams forked from `s`'s prefix,
/// over `steps` steps; the first run compiles the pipelines for this width and is not
/// timed.
async fn stream_step_ms_median(
    gm: &GpuModel,
    s: &mut GpuSession,
    m: usize,
    steps: usize,
    runs: usize,
) -> Result<f64> {
    let mut times = Vec::new();
    for run in 0..runs + 1 {
        let mut tokens = fork_streams(s, m)?;
        let t0 = now_seconds();
        for _ in 0..steps {
            gm.step_streams(s, &tokens, &[])?;
            tokens = gm.read_ids(s).await?;
        }
        if run > 0 {
            times.push((now_seconds() - t0) * 1000.0 / steps as f64);
        }
    }
    Ok(median(times))
}

/// The per-kernel time of one decode step of `m` streams forked from `s`'s prefix.
async fn profile_step(
    gm: &GpuModel,
    s: &mut GpuSession,
    m: usize,
    profiler: &mut Profiler,
) -> Result<ProfileReport> {
    let tokens = fork_streams(s, m)?;
    let rows = s.stream_rows(&tokens)?;
    gm.forward_with(s, &rows, Logits::All, &[], Some(profiler))?;
    gm.read_ids(s).await?;
    profiler.report(&gm.ctx).await
}

/// A session with a shared prefix of [`STREAM_PREFIX`] tokens (at most `prefill_tokens`)
/// prefilled, room for up to `max_streams` streams of `stream_capacity` tokens each.
async fn prefixed_session(
    gm: &GpuModel,
    prefill_tokens: usize,
    max_streams: usize,
    stream_capacity: usize,
) -> Result<GpuSession> {
    let prefix: Vec<u32> = (0..STREAM_PREFIX.min(prefill_tokens.max(1)) as u32)
        .map(|i| 100 + 7 * i)
        .collect();
    let mut s = GpuSession::new(gm, prefix.len(), max_streams, stream_capacity)?;
    gm.append(&mut s, &prefix, Logits::Last, &[])?;
    gm.read_ids(&s).await?;
    Ok(s)
}

/// Forks `m` fresh streams (each empty, after the prefix) and returns their first tokens.
fn fork_streams(s: &mut GpuSession, m: usize) -> Result<Vec<u32>> {
    s.fork(m)?;
    Ok((0..m as u32).map(|i| 200 + i).collect())
}

/// `n` tokens from a fixed LCG: the same prompt every run and on every machine.
pub(crate) fn pseudo_random_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
