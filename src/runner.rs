//! A model ready to run on the backend chosen at load time, the CPU engine or a GPU,
//! behind one API: the CLI and the browser both go through it.
//!
//! Choosing ([`choose`], native): `cpu` and `gpu` are taken as asked; `auto` takes a
//! hardware GPU when one is offered and falls back to the CPU with the reason (a
//! software adapter such as lavapipe is slower than our CPU path). The browser chooses
//! in `wasm/detect.rs` from what `navigator.gpu` says, passing over a software adapter
//! the same way (SwiftShader: `info.isFallbackAdapter`, or its name).

use crate::engine::{CpuSequence, Engine, Sequence};
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::gpu::{GpuAdapter, GpuContext, GpuModel, GpuSequence, KvPrecision, MAX_ROWS};
use crate::lora::Adapter;
use crate::model::{Config, Logits, TensorSource};
use crate::reason::{
    reason, CpuDecoder, Decoder, Event, Feed, GpuDecoder, Heads, Picked, ReasonOptions,
};
use crate::sampler::Sampler;
use crate::tokenizer::Tokenizer;

/// Which backend the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendRequest {
    Cpu,
    Gpu,
    Auto,
}

impl std::str::FromStr for BackendRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendRequest::Cpu),
            "gpu" | "webgpu" => Ok(BackendRequest::Gpu),
            "auto" => Ok(BackendRequest::Auto),
            other => Err(Error::InvalidArgument(format!(
                "backend `{other}`: use \"auto\", \"gpu\" (\"webgpu\") or \"cpu\""
            ))),
        }
    }
}

/// The outcome of [`choose`]: a device when a GPU was chosen, and why.
pub struct Choice {
    pub ctx: Option<GpuContext>,
    /// A sentence for people: which backend and why (the fallback's cause included).
    pub reason: String,
}

/// Opens a GPU when `request` wants one. `auto` falls back to the CPU (with the reason)
/// when no adapter is offered or when it is a software one; `gpu` without an adapter
/// is an error.
pub async fn choose(request: BackendRequest) -> Result<Choice> {
    let cpu = |reason: String| Choice { ctx: None, reason };
    match request {
        BackendRequest::Cpu => Ok(cpu("CPU backend, as asked".into())),
        BackendRequest::Gpu => {
            let ctx = GpuContext::new().await?;
            let reason = format!("GPU backend, as asked: {}", ctx.adapter.describe());
            Ok(Choice {
                ctx: Some(ctx),
                reason,
            })
        }
        BackendRequest::Auto => match GpuContext::new().await {
            Ok(ctx) if !ctx.adapter.software => {
                let reason = format!("GPU adapter available: {}", ctx.adapter.describe());
                Ok(Choice {
                    ctx: Some(ctx),
                    reason,
                })
            }
            Ok(ctx) => Ok(cpu(format!(
                "CPU backend: the only GPU is a software one ({}); ask for the GPU backend to use it anyway",
                ctx.adapter.name
            ))),
            Err(e) => Ok(cpu(format!("CPU backend: {e}"))),
        },
    }
}

/// A tokenizer and a model on the GPU.
pub struct GpuEngine {
    pub tokenizer: Tokenizer,
    pub gm: GpuModel,
}

/// A loaded model on one backend.
pub enum Runner {
    Cpu(Box<Engine>),
    Gpu(Box<GpuEngine>),
}

/// A LoRA adapter resident on a runner's backend (several may be; each request says
/// which one it uses).
pub enum LoadedAdapter {
    Cpu(Box<Adapter>),
    Gpu(Box<GpuAdapter>),
}

impl LoadedAdapter {
    /// Bytes the adapter's weights take where they live.
    pub fn n_bytes(&self) -> usize {
        match self {
            LoadedAdapter::Cpu(a) => a.n_bytes(),
            LoadedAdapter::Gpu(a) => a.bytes as usize,
        }
    }
}

/// A request's decoder on either backend.
pub enum AnyDecoder<'a> {
    Cpu(CpuDecoder<'a>),
    Gpu(Box<GpuDecoder<'a>>),
}

impl Decoder for AnyDecoder<'_> {
    fn reserve(&mut self, prompt: usize, candidates: usize, room: usize) -> Result<()> {
        match self {
            AnyDecoder::Cpu(d) => d.reserve(prompt, candidates, room),
            AnyDecoder::Gpu(d) => d.reserve(prompt, candidates, room),
        }
    }

    async fn prefill(&mut self, tokens: &[u32], pool: bool, lora: bool) -> Result<Vec<f32>> {
        match self {
            AnyDecoder::Cpu(d) => d.prefill(tokens, pool, lora).await,
            AnyDecoder::Gpu(d) => d.prefill(tokens, pool, lora).await,
        }
    }

    fn fork(&mut self, n: usize) -> Result<()> {
        match self {
            AnyDecoder::Cpu(d) => d.fork(n),
            AnyDecoder::Gpu(d) => d.fork(n),
        }
    }

    async fn step(&mut self, feeds: &mut [Feed<'_>], lora: bool) -> Result<Vec<Picked>> {
        match self {
            AnyDecoder::Cpu(d) => d.step(feeds, lora).await,
            AnyDecoder::Gpu(d) => d.step(feeds, lora).await,
        }
    }

    async fn last_hidden(
        &mut self,
        candidate: usize,
        tokens: &[u32],
        lora: bool,
    ) -> Result<Vec<f32>> {
        match self {
            AnyDecoder::Cpu(d) => d.last_hidden(candidate, tokens, lora).await,
            AnyDecoder::Gpu(d) => d.last_hidden(candidate, tokens, lora).await,
        }
    }

    fn kv_bytes(&self) -> usize {
        match self {
            AnyDecoder::Cpu(d) => d.kv_bytes(),
            AnyDecoder::Gpu(d) => d.kv_bytes(),
        }
    }
}

/// A sequence on either backend (the GPU's, with its many buffer handles, boxed).
pub enum AnySequence<'a> {
    Cpu(CpuSequence<'a>),
    Gpu(Box<GpuSequence<'a>>),
}

impl Sequence for AnySequence<'_> {
    async fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        match self {
            AnySequence::Cpu(s) => s.feed(tokens).await,
            AnySequence::Gpu(s) => s.feed(tokens).await,
        }
    }

    async fn feed_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        match self {
            AnySequence::Cpu(s) => s.feed_greedy(tokens).await,
            AnySequence::Gpu(s) => s.feed_greedy(tokens).await,
        }
    }

    async fn feed_sampled(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        match self {
            AnySequence::Cpu(s) => s.feed_sampled(tokens, sampler, history).await,
            AnySequence::Gpu(s) => s.feed_sampled(tokens, sampler, history).await,
        }
    }

    fn room(&self) -> usize {
        match self {
            AnySequence::Cpu(s) => s.room(),
            AnySequence::Gpu(s) => s.room(),
        }
    }
}

impl Runner {
    /// Loads the model named by `gguf` from `source`: onto `ctx`'s GPU when given (one
    /// tensor at a time), else into the CPU engine.
    pub async fn load(
        gguf: &Gguf,
        source: &mut dyn TensorSource,
        ctx: Option<GpuContext>,
    ) -> Result<Self> {
        Ok(match ctx {
            None => Runner::Cpu(Box::new(Engine::load(gguf, source)?)),
            Some(ctx) => {
                let tokenizer = Tokenizer::from_gguf(gguf)?;
                let gm = GpuModel::load(ctx, gguf, source).await?;
                Runner::Gpu(Box::new(GpuEngine { tokenizer, gm }))
            }
        })
    }

    /// The precision of the KV caches of sequences made from now on (GPU only: the
    /// CPU's cache is f32).
    pub fn set_kv_precision(&mut self, precision: KvPrecision) {
        if let Runner::Gpu(g) = self {
            g.gm.set_kv_precision(precision);
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        match self {
            Runner::Cpu(e) => &e.tokenizer,
            Runner::Gpu(g) => &g.tokenizer,
        }
    }

    pub fn config(&self) -> &Config {
        match self {
            Runner::Cpu(e) => &e.model.config,
            Runner::Gpu(g) => &g.gm.model.config,
        }
    }

    /// "cpu" or "gpu".
    pub fn backend(&self) -> &'static str {
        match self {
            Runner::Cpu(_) => "cpu",
            Runner::Gpu(_) => "gpu",
        }
    }

    /// "cpu", or the GPU adapter's name and API.
    pub fn adapter(&self) -> String {
        match self {
            Runner::Cpu(_) => "cpu".into(),
            Runner::Gpu(g) => g.gm.ctx.adapter.describe(),
        }
    }

    /// A fresh sequence of up to `capacity` tokens (clamped to the model's context).
    pub fn sequence(&self, capacity: usize) -> Result<AnySequence<'_>> {
        let capacity = capacity.min(self.config().context_length);
        Ok(match self {
            Runner::Cpu(e) => AnySequence::Cpu(CpuSequence {
                engine: e,
                cache: e.new_cache(capacity),
            }),
            Runner::Gpu(g) => AnySequence::Gpu(Box::new(GpuSequence {
                gm: &g.gm,
                session: g.gm.session(capacity)?,
                capacity,
            })),
        })
    }

    /// Makes `adapter` (checked against the model) resident on this runner's backend.
    pub fn load_adapter(&self, adapter: Adapter) -> Result<LoadedAdapter> {
        adapter.check_fits(self.config())?;
        Ok(match self {
            Runner::Cpu(_) => LoadedAdapter::Cpu(Box::new(adapter)),
            Runner::Gpu(g) => LoadedAdapter::Gpu(Box::new(GpuAdapter::upload(
                &g.gm.ctx,
                &adapter,
                self.config(),
            )?)),
        })
    }

    /// A decoder for one request on this runner's backend, `adapter` as the reasoning
    /// adapter.
    pub fn decoder<'a>(&'a self, adapter: Option<&'a LoadedAdapter>) -> Result<AnyDecoder<'a>> {
        Ok(match self {
            Runner::Cpu(e) => AnyDecoder::Cpu(CpuDecoder::new(
                &e.model,
                match adapter {
                    Some(LoadedAdapter::Cpu(a)) => Some(&**a),
                    Some(LoadedAdapter::Gpu(_)) => return Err(wrong_backend()),
                    None => None,
                },
            )),
            Runner::Gpu(g) => AnyDecoder::Gpu(Box::new(GpuDecoder::new(
                &g.gm,
                match adapter {
                    Some(LoadedAdapter::Gpu(a)) => Some(&**a),
                    Some(LoadedAdapter::Cpu(_)) => return Err(wrong_backend()),
                    None => None,
                },
            ))),
        })
    }

    /// Runs one request of the reasoning runtime ([`crate::reason::reason`]) with
    /// `adapter` as the reasoning adapter; `emit` receives its events (an error from it
    /// stops the request).
    pub async fn reason(
        &self,
        adapter: Option<&LoadedAdapter>,
        heads: Heads<'_>,
        prompt: &[u32],
        o: &ReasonOptions,
        emit: impl FnMut(&Event) -> Result<()>,
    ) -> Result<Option<String>> {
        let context = self.config().context_length;
        let mut d = self.decoder(adapter)?;
        let tk = self.tokenizer();
        reason(
            &mut d,
            tk,
            context,
            adapter.is_some(),
            heads,
            prompt,
            o,
            emit,
        )
        .await
    }

    /// Logits (positions, vocab) of every position of `ids`, run from an empty cache.
    pub async fn position_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        let capacity = self.config().context_length;
        if ids.len() > capacity {
            return Err(Error::ContextOverflow {
                tokens: ids.len(),
                capacity,
            });
        }
        let mut out = Vec::with_capacity(ids.len() * self.config().vocab_size);
        match self {
            Runner::Cpu(e) => {
                let mut cache = e.new_cache(ids.len());
                for chunk in ids.chunks(crate::engine::PREFILL_CHUNK) {
                    out.extend(e.model.forward(chunk, &mut cache, Logits::All)?);
                }
            }
            Runner::Gpu(g) => {
                let mut s = g.gm.session(ids.len())?;
                for chunk in ids.chunks(MAX_ROWS) {
                    g.gm.append(&mut s, chunk, Logits::All, &[])?;
                    out.extend(g.gm.read_logits(&s).await?);
                }
            }
        }
        Ok(out)
    }
}

fn wrong_backend() -> Error {
    Error::InvalidArgument(
        "the adapter was loaded for another backend: load it again on this engine".into(),
    )
}
