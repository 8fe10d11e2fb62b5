//! The JavaScript surface of the crate (wasm32 only), exported with `wasm_bindgen`.
//!
//! Kept thin on purpose: the engine lives in the other modules; this file only converts
//! between JS values and Rust, and never panics at the boundary (failures become a
//! rejected promise carrying an `Error` with a stable `code`, see [`js::coded_error`]).
//!
//! The npm package's main-thread API (`createEngine`, in js/) runs this module in a
//! Web Worker; these exports are its building blocks:
//! - `version(): string`: the crate version.
//! - `detectBackend(): Promise<{backend: "webgpu" | "cpu", reason: string, adapter: string | null}>`:
//!   which backend the engine would use here, and why. Works in a Window and in a Worker:
//!   it reads `navigator.gpu` from the global object rather than through `window`.
//! - `class Engine`: a model loaded on WebGPU or the CPU, either from bytes in memory
//!   (`Engine.load(bytes, options)`) or tensor by tensor from a random-access reader
//!   (`Engine.loadFromReader(reader, options)`, an OPFS file in the worker), then
//!   `backend`, `tokenize`, `logits`, `positionLogits`, `generate`, `bench`; and the
//!   reasoning runtime (reason.rs): `loadAdapter`, `unloadAdapter`, `loadSwitcher`,
//!   `loadVerifier`, `reason`, `benchReason`.
//! - `sha256OfReader(reader, onProgress)`: the whole file's SHA-256 (verification).
//! - `wasmMemoryBytes()`: the size of wasm memory now (it never shrinks: the peak).
//! - `cpuThreads()`: threads the CPU path computes on; in the multi-threaded build
//!   (`--features threads`), `PoolStart`, `sharedModule`, `sharedMemory` and
//!   `runPoolThread` (pool.rs) are what js/pool.js starts them with.

mod detect;
mod js;
#[cfg(feature = "threads")]
mod pool;
mod reader;
mod reason;

use js_sys::Function;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::engine::{Sequence, PREFILL_CHUNK};
use crate::gguf::Gguf;
use crate::gpu::{GpuContext, KvPrecision};
use crate::model::{BytesSource, TensorSource};
use crate::runner::{BackendRequest, Runner};
use detect::{detect, BackendChoice};
use js::{crate_error as js_error, internal, invalid};
use reader::{JsReader, ReaderSource};

/// Threads the CPU path computes on: rayon's pool (1 in the single-threaded build).
#[wasm_bindgen(js_name = cpuThreads)]
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

#[wasm_bindgen(typescript_custom_section)]
const TS_BACKEND: &'static str = r#"
/** What `detectBackend()` resolves to. */
export interface BackendChoice {
  /** The backend the engine would use in this browser. */
  backend: "webgpu" | "cpu";
  /** Why: a sentence for people (shown on the page). */
  reason: string;
  /** The WebGPU adapter's description when there is one (also when `backend` is
   *  "cpu" because the adapter is a software one, such as SwiftShader), else null. */
  adapter: string | null;
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "Promise<BackendChoice>")]
    pub type BackendChoicePromise;
}

#[wasm_bindgen(typescript_custom_section)]
const TS_ENGINE: &'static str = r#"
/** Options of `Engine.load()`. */
export interface LoadOptions {
  /** "auto" (default): WebGPU when a hardware adapter is offered, else the CPU with
   *  the reason (a software adapter such as SwiftShader, Chrome's fallback, is slower
   *  than the CPU engine); "webgpu" (or "gpu"): WebGPU, on any adapter, or an error;
   *  "cpu": the CPU engine (wasm SIMD). */
  backend?: "auto" | "webgpu" | "gpu" | "cpu";
  /** Precision of the WebGPU KV cache: "f16" (default: half the memory, as
   *  llama.cpp's default) or "f32" (exact). The CPU's cache is f32. */
  kv_cache?: "f16" | "f32" | "int8";
}

/** Which backend a loaded engine runs on, and why. */
export interface EngineBackend {
  backend: "webgpu" | "cpu";
  /** A sentence for people: the adapter, or why the CPU is used. */
  reason: string;
  /** The WebGPU adapter's description, else null. */
  adapter: string | null;
}

/** Options of `Engine.generate()`. */
export interface GenerateOptions {
  /** Wrap the prompt as a user message in the model's chat template (default false). */
  chat?: boolean;
  /** Default 256. */
  max_tokens?: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  top_k?: number;
  top_p?: number;
  repetition_penalty?: number;
  seed?: number;
}

/** What `Engine.generate()` resolves to. */
export interface Generation {
  /** Generated token ids (the prompt excluded). */
  ids: number[];
  text: string;
  prompt_tokens: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  /** "eos" or "length". */
  stop: string;
}

/** Options of `Engine.bench()`; the defaults are the CLI's. */
export interface BenchOptions {
  prefill_tokens?: number;
  decode_tokens?: number;
  runs?: number;
  /** Stream counts whose decode step time is measured (WebGPU only). */
  streams?: number[];
  /** Also time each kernel of one decode step per stream count (WebGPU with
   *  timestamp queries only). */
  profile?: boolean;
}

/** What `Engine.bench()` resolves to: the JSON of `edge-reason bench --json`. */
export interface BenchReport {
  backend: "cpu" | "gpu";
  adapter: string;
  runs: number;
  prefill_tokens: number;
  prefill_tok_s: number;
  decode_tokens: number;
  decode_tok_s: number;
  /** Milliseconds of one decode step for M streams, keyed by M (WebGPU only). */
  stream_step_ms?: Record<string, number>;
  /** Device bytes keyed by M: the weights plus a session of a `prefill_tokens` prompt
   *  with M candidates of `decode_tokens` each (WebGPU only). */
  gpu_buffer_bytes?: Record<string, number>;
  /** Whether the kernels use subgroup operations (WebGPU only). */
  subgroups?: boolean;
  /** Bytes one decode token reads: the weights plus the KV cache (WebGPU only). */
  decode_bytes_per_token?: number;
  /** decode_bytes_per_token * decode_tok_s in GB/s (WebGPU only). */
  decode_gb_s?: number;
  /** With `profile`: per M, the step time, the overhead per dispatch, and each
   *  kernel's dispatch count and time. */
  profile?: Record<string, {
    step_ms: number;
    overhead_ms_per_dispatch: number;
    dispatches: number;
    kernel_ms: number;
    kernels: Record<string, { dispatches: number; ms: number }>;
  }>;
}
"#;

fn from_js<T: serde::de::DeserializeOwned + Default>(
    v: Option<JsValue>,
    what: &str,
) -> Result<T, JsValue> {
    let Some(v) = v.filter(|v| !v.is_undefined() && !v.is_null()) else {
        return Ok(T::default());
    };
    serde_wasm_bindgen::from_value(v).map_err(|e| invalid(&format!("{what}: {e}")))
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsValue> {
    // Maps as plain objects, not `Map`s, so JSON.stringify shows them; `None` as null,
    // as the TypeScript types say.
    let ser = serde_wasm_bindgen::Serializer::new()
        .serialize_maps_as_objects(true)
        .serialize_missing_as_null(true);
    v.serialize(&ser).map_err(|e| internal(&e.to_string()))
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LoadOptions {
    backend: Option<String>,
    kv_cache: Option<crate::gpu::KvPrecision>,
}

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GenerateOptions {
    chat: bool,
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repetition_penalty: f32,
    seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        let s = crate::sampler::SamplerConfig::default();
        GenerateOptions {
            chat: false,
            max_tokens: 256,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            repetition_penalty: s.repetition_penalty,
            seed: s.seed,
        }
    }
}

/// A loaded model and tokenizer, on WebGPU or on the CPU (wasm SIMD).
#[wasm_bindgen(js_name = Engine)]
pub struct WasmEngine {
    runner: Runner,
    choice: BackendChoice,
    /// Resident LoRA adapters, in load order.
    adapters: Vec<reason::Resident>,
    switcher: Option<crate::reason::Switcher>,
    verifier: Option<crate::reason::Verifier>,
}

impl WasmEngine {
    fn new(runner: Runner, choice: BackendChoice) -> Self {
        WasmEngine {
            runner,
            choice,
            adapters: Vec::new(),
            switcher: None,
            verifier: None,
        }
    }
}

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// Loads a whole GGUF file (`bytes`) on the backend `options.backend` asks for:
    /// checks the header and every tensor's name and shape, builds the tokenizer, and
    /// uploads the weights one tensor at a time. With "auto", a WebGPU failure (no
    /// adapter, no device, not enough GPU memory) falls back to the CPU and says why.
    #[wasm_bindgen(unchecked_return_type = "Engine")]
    pub async fn load(
        bytes: Vec<u8>,
        #[wasm_bindgen(unchecked_param_type = "LoadOptions")] options: Option<JsValue>,
    ) -> Result<WasmEngine, JsValue> {
        let options: LoadOptions = from_js(options, "Engine.load options")?;
        let gguf = Gguf::parse(&bytes).map_err(js_error)?;
        load_on_backend(&gguf, &mut BytesSource(&bytes), &options).await
    }

    /// Loads a GGUF file through `reader`, one tensor at a time: the header is read
    /// first, then each tensor is read into wasm memory, uploaded and dropped, so on
    /// WebGPU peak wasm memory stays near the largest tensor plus the tokenizer.
    /// (The CPU backend keeps the weights in wasm memory: that is where it runs.)
    #[wasm_bindgen(js_name = loadFromReader, unchecked_return_type = "Engine")]
    pub async fn load_from_reader(
        reader: JsReader,
        #[wasm_bindgen(unchecked_param_type = "LoadOptions")] options: Option<JsValue>,
    ) -> Result<WasmEngine, JsValue> {
        let options: LoadOptions = from_js(options, "Engine.loadFromReader options")?;
        let mut source = ReaderSource::new(&reader).map_err(js_error)?;
        let gguf = source.header().map_err(js_error)?;
        load_on_backend(&gguf, &mut source, &options).await
    }

    /// Which backend this engine runs on, and why.
    #[wasm_bindgen(getter, unchecked_return_type = "EngineBackend")]
    pub fn backend(&self) -> Result<JsValue, JsValue> {
        self.choice.to_js()
    }

    /// Token ids of `text`; with `special`, special-token text becomes its id.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, JsValue> {
        self.runner
            .tokenizer()
            .encode(text, special)
            .map_err(js_error)
    }

    /// Logits (vocab) of the last position after running `ids` from an empty cache.
    #[wasm_bindgen(unchecked_return_type = "Float32Array")]
    pub async fn logits(&self, ids: Vec<u32>) -> Result<JsValue, JsValue> {
        let mut seq = self.runner.sequence(ids.len()).map_err(js_error)?;
        let logits = seq.feed(&ids).await.map_err(js_error)?;
        Ok(js_sys::Float32Array::from(&logits[..]).into())
    }

    /// Logits of every position of `ids` (positions * vocab, row-major) from an empty
    /// cache.
    #[wasm_bindgen(js_name = positionLogits, unchecked_return_type = "Float32Array")]
    pub async fn position_logits(&self, ids: Vec<u32>) -> Result<JsValue, JsValue> {
        let logits = self.runner.position_logits(&ids).await.map_err(js_error)?;
        Ok(js_sys::Float32Array::from(&logits[..]).into())
    }

    /// Generates after `prompt`, calling `on_text` (when given) with each new piece of
    /// text as soon as it is complete UTF-8.
    #[wasm_bindgen(unchecked_return_type = "Generation")]
    pub async fn generate(
        &self,
        prompt: String,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions")] options: Option<JsValue>,
        #[wasm_bindgen(unchecked_param_type = "((text: string) => void) | undefined")]
        on_text: Option<Function>,
        #[wasm_bindgen(unchecked_param_type = "(() => boolean) | undefined")] should_stop: Option<
            Function,
        >,
    ) -> Result<JsValue, JsValue> {
        let o: GenerateOptions = from_js(options, "generate options")?;
        let tk = self.runner.tokenizer();
        let ids = tk.encode_user_prompt(&prompt, o.chat).map_err(js_error)?;
        let sampler = crate::sampler::SamplerConfig {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            repetition_penalty: o.repetition_penalty,
            seed: o.seed,
            ..Default::default()
        };
        let capacity = crate::engine::DEFAULT_CONTEXT.min(ids.len() + o.max_tokens);
        // A text callback that throws stops decoding before the next step (its exception
        // is what rejects); `should_stop` returning true stops it before the next step or
        // prompt part with ABORTED.
        let thrown = std::cell::RefCell::new(None);
        let mut seq = Stoppable {
            inner: self.runner.sequence(capacity).map_err(js_error)?,
            thrown: &thrown,
            should_stop: should_stop.as_ref(),
        };
        let g = crate::engine::generate(tk, &mut seq, &ids, o.max_tokens, sampler, |piece| {
            if let Some(f) = &on_text {
                if let Err(e) = f.call1(&JsValue::NULL, &JsValue::from_str(piece)) {
                    thrown.borrow_mut().get_or_insert(e);
                }
            }
        })
        .await;
        if let Some(e) = thrown.borrow_mut().take() {
            return Err(e);
        }
        to_js(&g.map_err(js_error)?)
    }

    /// Prefill and decode speed (and, on WebGPU, the decode step time of 1, 2, 4, 8
    /// streams): the same measurement and JSON as `edge-reason bench --json`.
    #[wasm_bindgen(unchecked_return_type = "BenchReport")]
    pub async fn bench(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BenchOptions")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let o: crate::bench::BenchOptions = from_js(options, "bench options")?;
        let report = crate::bench::run(&self.runner, &o)
            .await
            .map_err(js_error)?;
        to_js(&report)
    }
}

/// A sequence that yields to the event loop before each step and each part of a long
/// prompt, and refuses to go on once `thrown` holds an exception (a text callback's).
struct Stoppable<'a, S> {
    inner: S,
    thrown: &'a std::cell::RefCell<Option<JsValue>>,
    should_stop: Option<&'a Function>,
}

impl<S> Stoppable<'_, S> {
    /// Lets the worker's event loop run (an abort message lands), then refuses to go on
    /// when a callback threw or `should_stop` says so.
    async fn check(&self) -> crate::Result<()> {
        crate::engine::yield_now().await;
        let stop = self.should_stop.is_some_and(|f| {
            f.call0(&JsValue::NULL)
                .map_or(true, |answer| answer.is_truthy())
        });
        match stop || self.thrown.borrow().is_some() {
            true => Err(crate::Error::Aborted(
                "the caller stopped the generation".into(),
            )),
            false => Ok(()),
        }
    }
}

impl<S: Sequence> Stoppable<'_, S> {
    /// Feeds `tokens` but for their last part of at most [`PREFILL_CHUNK`], checking
    /// before each part (a long prompt can be stopped between its parts); returns the
    /// last part, checked, for the caller to feed. Parts on the engine's own chunk
    /// boundaries: the cache ends up exactly as one feed of all the tokens leaves it.
    async fn feed_all_but_last_part<'t>(&mut self, tokens: &'t [u32]) -> crate::Result<&'t [u32]> {
        let mut rest = tokens;
        while rest.len() > PREFILL_CHUNK {
            self.check().await?;
            let (part, tail) = rest.split_at(PREFILL_CHUNK);
            self.inner.feed(part).await?;
            rest = tail;
        }
        self.check().await?;
        Ok(rest)
    }
}

impl<S: Sequence> Sequence for Stoppable<'_, S> {
    async fn feed(&mut self, tokens: &[u32]) -> crate::Result<Vec<f32>> {
        let last = self.feed_all_but_last_part(tokens).await?;
        self.inner.feed(last).await
    }

    async fn feed_greedy(&mut self, tokens: &[u32]) -> crate::Result<u32> {
        let last = self.feed_all_but_last_part(tokens).await?;
        self.inner.feed_greedy(last).await
    }

    async fn feed_sampled(
        &mut self,
        tokens: &[u32],
        sampler: &mut crate::sampler::Sampler,
        history: &[u32],
    ) -> crate::Result<u32> {
        let last = self.feed_all_but_last_part(tokens).await?;
        self.inner.feed_sampled(last, sampler, history).await
    }

    fn room(&self) -> usize {
        self.inner.room()
    }
}

/// Runs once when the module is instantiated (in each thread of the threads build):
/// a Rust panic reaches the console with its message and place, not as a bare trap.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The crate version (the `version` field of Cargo.toml).
#[wasm_bindgen]
pub fn version() -> String {
    crate::version().to_string()
}

/// The SHA-256 of everything `reader` holds, lowercase hex; `on_progress(bytes)` (when
/// given) is called after each 8 MiB.
#[wasm_bindgen(js_name = sha256OfReader)]
pub fn sha256_of_reader(
    reader: JsReader,
    #[wasm_bindgen(unchecked_param_type = "((bytesHashed: number) => void) | undefined")]
    on_progress: Option<Function>,
) -> Result<String, JsValue> {
    let source = ReaderSource::new(&reader).map_err(js_error)?;
    source.sha256(on_progress.as_ref()).map_err(js_error)
}

/// Bytes of wasm linear memory now. Memory grows and never shrinks, so this is the
/// peak so far.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    let buffer: js_sys::ArrayBuffer = memory.buffer().unchecked_into();
    buffer.byte_length() as f64
}

/// Which backend the engine would use here: `webgpu` when `navigator.gpu` exists and
/// `requestAdapter()` offers an adapter, else `cpu`, with the reason.
#[wasm_bindgen(js_name = detectBackend)]
pub fn detect_backend() -> BackendChoicePromise {
    wasm_bindgen_futures::future_to_promise(async move {
        let choice = detect().await.map_err(JsValue::from)?;
        choice.to_js().map_err(JsValue::from)
    })
    .unchecked_into()
}

/// Loads `gguf` from `source` on the backend `options` asks for (see [`WasmEngine::load`]).
async fn load_on_backend(
    gguf: &Gguf,
    source: &mut dyn TensorSource,
    options: &LoadOptions,
) -> Result<WasmEngine, JsValue> {
    let request: BackendRequest = options
        .backend
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(js_error)?;
    if request == BackendRequest::Cpu {
        return load_on_cpu(gguf, source, BackendChoice::cpu("CPU backend, as asked")).await;
    }
    // What to do when WebGPU is unusable: "auto" falls back to the CPU and says why.
    let fallback = |why: String, err: crate::Error| match request {
        BackendRequest::Auto => Ok(BackendChoice::cpu(format!("CPU backend: {why}"))),
        _ => Err(js_error(err)),
    };
    let mut detected = detect().await?;
    // A software adapter only when WebGPU is asked for.
    if detected.software && request == BackendRequest::Auto {
        detected.reason = format!("CPU backend: {}", detected.reason);
        return load_on_cpu(gguf, source, detected).await;
    }
    let opened = if detected.webgpu || detected.software {
        GpuContext::new().await
    } else {
        Err(crate::Error::NoGpu(detected.reason.clone()))
    };
    let choice = match opened {
        Ok(mut ctx) => {
            // wgpu names the adapter by `info.description`, often empty in browsers.
            if ctx.adapter.name.trim().is_empty() {
                ctx.adapter.name = detected.adapter.clone().unwrap_or_default();
            }
            // ...and reports no device type: detect() knew SwiftShader by its flag or name.
            ctx.adapter.software |= detected.software;
            let ctx_name = ctx.adapter.name.clone();
            match Runner::load(gguf, source, Some(ctx)).await {
                Ok(mut runner) => {
                    runner.set_kv_precision(options.kv_cache.unwrap_or(KvPrecision::F16));
                    if detected.software {
                        detected.webgpu = true;
                        detected.reason =
                            format!("WebGPU, as asked, on a software adapter ({ctx_name})");
                    }
                    return Ok(WasmEngine::new(runner, detected));
                }
                Err(e @ (crate::Error::GpuMemory { .. } | crate::Error::Gpu(_))) => {
                    fallback(format!("WebGPU could not hold the model ({e})"), e)?
                }
                Err(e) => return Err(js_error(e)),
            }
        }
        Err(e) => fallback(unusable_reason(&e), e)?,
    };
    load_on_cpu(gguf, source, choice).await
}

/// Why WebGPU is unusable, as the CPU fallback's reason: a missing GPU's own reason,
/// without the error's advice to the caller (to load on the CPU, which is happening).
fn unusable_reason(e: &crate::Error) -> String {
    match e {
        crate::Error::NoGpu(why) => why.clone(),
        other => other.to_string(),
    }
}

async fn load_on_cpu(
    gguf: &Gguf,
    source: &mut dyn TensorSource,
    choice: BackendChoice,
) -> Result<WasmEngine, JsValue> {
    let runner = Runner::load(gguf, source, None).await.map_err(js_error)?;
    Ok(WasmEngine::new(runner, choice))
}
