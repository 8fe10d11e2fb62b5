//! Prompt in, tokens out: a model, its tokenizer and a sampler, with timings.

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::kv_cache::KvCache;
use crate::model::{BytesSource, Logits, Model, TensorSource};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// Prompt tokens run through the model per forward call during prefill.
pub const PREFILL_CHUNK: usize = 128;
/// Context used when the caller does not choose one (the model's own may be far larger).
pub const DEFAULT_CONTEXT: usize = 4096;

/// A loaded model with its tokenizer.
pub struct Engine {
    pub model: Model,
    pub tokenizer: Tokenizer,
}

/// What a generation produced, with its speed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    /// Generated ids (the prompt excluded).
    pub ids: Vec<u32>,
    pub text: String,
    pub prompt_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Why it stopped: `"eos"` or `"length"`.
    pub stop: &'static str,
}

/// Seconds since an arbitrary origin, on native and in the browser.
pub fn now_seconds() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        // performance.now() (sub-millisecond) in a Window or a Worker, else Date.now().
        let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
        let now = perf.as_ref().and_then(|p| {
            let f = js_sys::Reflect::get(p, &"now".into()).ok()?;
            let f: js_sys::Function = wasm_bindgen::JsCast::dyn_into(f).ok()?;
            f.call0(p).ok()?.as_f64()
        });
        now.unwrap_or_else(js_sys::Date::now) / 1000.0
    }
}

/// Lets the browser's event loop run (a message to the worker, an abort) before the
/// next step of a long computation; natively it returns at once.
pub async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    {
        // A macrotask through a MessageChannel: unlike setTimeout(0), never clamped to 4 ms.
        let _ = wasm_bindgen_futures::JsFuture::from(js_yield::next_macrotask()).await;
    }
}

#[cfg(target_arch = "wasm32")]
mod js_yield {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(inline_js = "export function next_macrotask() {
        return new Promise((resolve) => {
            const channel = new MessageChannel();
            channel.port1.onmessage = () => { channel.port1.close(); resolve(); };
            channel.port2.postMessage(null);
        });
    }")]
    extern "C" {
        pub fn next_macrotask() -> js_sys::Promise;
    }
}

impl Engine {
    /// Loads a model and tokenizer from a parsed header and a tensor source.
    pub fn load(gguf: &Gguf, source: &mut dyn TensorSource) -> Result<Self> {
        let tokenizer = Tokenizer::from_gguf(gguf)?;
        let model = Model::load(gguf, source)?;
        Ok(Engine { model, tokenizer })
    }

    /// Loads a whole GGUF file held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let gguf = Gguf::parse(bytes)?;
        Self::load(&gguf, &mut BytesSource(bytes))
    }

    /// Loads a GGUF file from disk, reading the header then one tensor at a time.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let gguf = read_gguf_header(path)?;
        Self::load(&gguf, &mut crate::model::FileSource::open(path)?)
    }

    /// A fresh cache for one sequence of at most `capacity` positions (clamped to the
    /// model's context length).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(
            &self.model.config,
            capacity.min(self.model.config.context_length),
        )
    }

    /// Runs the prompt through the model in chunks and returns the last position's logits.
    pub fn prefill(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        cache.check_room(ids.len())?;
        let mut logits = Vec::new();
        let n_chunks = ids.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let want = if i + 1 == n_chunks {
                Logits::Last
            } else {
                Logits::None
            };
            logits = self.model.forward(chunk, cache, want)?;
        }
        Ok(logits)
    }

    /// Generates up to `max_tokens` after `prompt_ids`, calling `on_text` with each new
    /// piece of text as soon as it is complete UTF-8.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        max_tokens: usize,
        sampler: SamplerConfig,
        context: usize,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let mut seq = CpuSequence {
            engine: self,
            cache: self.new_cache(context),
        };
        ready(generate(
            &self.tokenizer,
            &mut seq,
            prompt_ids,
            max_tokens,
            sampler,
            on_text,
        ))
    }
}

/// The output of a future that finishes without waiting, such as any work on a
/// [`CpuSequence`]; one that would wait is an error, never a hang.
pub fn ready<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => Err(Error::InvalidArgument(
            "this work waits for a device: await it instead".into(),
        )),
    }
}

/// One sequence being extended on some backend. Async because a GPU's results arrive
/// later (natively the futures block on the device; in the browser they yield to the
/// event loop); the CPU's are ready at once.
#[allow(async_fn_in_trait)] // used through generics only, never across threads
pub trait Sequence {
    /// Appends `tokens` and returns the logits (vocab) of the last one.
    async fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Appends `tokens` and returns the most likely next token (a backend may pick it
    /// without handing over the logits).
    async fn feed_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        Ok(crate::sampler::argmax(&self.feed(tokens).await?))
    }
    /// Appends `tokens` and returns the next token `sampler` picks (`history`: the
    /// tokens so far, for its repetition penalty); a backend may sample on its device.
    async fn feed_sampled(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        Ok(sampler.sample(&mut self.feed(tokens).await?, history))
    }
    /// Tokens it can still take.
    fn room(&self) -> usize;
}

/// A sequence on the CPU backend.
pub struct CpuSequence<'a> {
    pub engine: &'a Engine,
    pub cache: KvCache,
}

impl Sequence for CpuSequence<'_> {
    async fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.engine.prefill(tokens, &mut self.cache)
    }

    fn room(&self) -> usize {
        self.cache.capacity() - self.cache.len()
    }
}

/// Generates up to `max_tokens` after `prompt_ids` on `seq`, calling `on_text` with
/// each new piece of text as soon as it is complete UTF-8.
pub async fn generate<S: Sequence>(
    tokenizer: &Tokenizer,
    seq: &mut S,
    prompt_ids: &[u32],
    max_tokens: usize,
    sampler: SamplerConfig,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let greedy = sampler.is_greedy();
    let mut sampler = Sampler::new(sampler)?;
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    if prompt_ids.len() + max_tokens.min(1) > seq.room() {
        return Err(Error::ContextOverflow {
            tokens: prompt_ids.len() + max_tokens.min(1),
            capacity: seq.room(),
        });
    }
    let mut history = prompt_ids.to_vec();
    let t0 = now_seconds();
    let mut next = next_token(seq, &mut sampler, greedy, prompt_ids, &history).await?;
    let t1 = now_seconds();
    let mut ids = Vec::new();
    let mut emitted = 0; // bytes of `text` already passed to on_text
    let mut text = String::new();
    let mut stop = "length";
    for step in 0..max_tokens {
        if tokenizer.is_end_of_generation(next) {
            stop = "eos";
            break;
        }
        ids.push(next);
        history.push(next);
        text = tokenizer.decode(&ids)?;
        if !text.ends_with('\u{FFFD}') && text.len() > emitted && text.is_char_boundary(emitted) {
            on_text(&text[emitted..]);
            emitted = text.len();
        }
        if step + 1 == max_tokens || seq.room() == 0 {
            break;
        }
        next = next_token(seq, &mut sampler, greedy, &[next], &history).await?;
    }
    if text.len() > emitted && text.is_char_boundary(emitted) {
        on_text(&text[emitted..]);
    }
    let t2 = now_seconds();
    let decoded = ids.len().saturating_sub(1).max(1) as f64;
    Ok(Generation {
        prompt_tokens: prompt_ids.len(),
        prefill_tok_s: prompt_ids.len() as f64 / (t1 - t0).max(1e-9),
        decode_tok_s: decoded / (t2 - t1).max(1e-9),
        ids,
        text,
        stop,
    })
}

/// Feeds `tokens` and picks the next token: the argmax when greedy, else sampled.
async fn next_token<S: Sequence>(
    seq: &mut S,
    sampler: &mut Sampler,
    greedy: bool,
    tokens: &[u32],
    history: &[u32],
) -> Result<u32> {
    if greedy {
        seq.feed_greedy(tokens).await
    } else {
        seq.feed_sampled(tokens, sampler, history).await
    }
}

/// Reads just enough of a GGUF file to parse its header ([`Gguf::read_header`]),
/// without reading tensor data.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_gguf_header(path: &std::path::Path) -> Result<Gguf> {
    use std::io::{Read, Seek, SeekFrom};
    let ctx = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(ctx(), e))?;
    let file_len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    Gguf::read_header(file_len, |offset, buf| {
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buf))
            .map_err(|e| Error::io(ctx(), e))
    })
}
