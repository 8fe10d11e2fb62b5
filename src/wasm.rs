//! The JavaScript surface of the crate (wasm32 only), exported with `wasm_bindgen`.
//!
//! Kept thin on purpose: the engine lives in the other modules; this file only converts
//! between JS values and Rust, and never panics at the boundary (failures become a
//! rejected promise carrying a `JsError`).
//!
//! Exports today:
//! - `version(): string`: the crate version.
//! - `detectBackend(): Promise<{backend: "webgpu" | "cpu", reason: string, adapter: string | null}>`:
//!   which backend the engine would use here, and why. Works in a Window and in a Worker:
//!   it reads `navigator.gpu` from the global object rather than through `window`.
//! - `class Engine`: a whole GGUF file held in memory, loaded on WebGPU or the CPU
//!   (`Engine.load(bytes, {backend})`, `backend`, `tokenize`, `logits`, `positionLogits`,
//!   `generate`, `bench`). Streaming from browser storage and the Web Worker wrapper
//!   come with the storage issue.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::engine::Sequence;
use crate::gpu::{GpuContext, KvPrecision};
use crate::model::BytesSource;
use crate::runner::{BackendRequest, Runner};

#[wasm_bindgen(typescript_custom_section)]
const TS_BACKEND: &'static str = r#"
/** What `detectBackend()` resolves to. */
export interface BackendChoice {
  /** The backend the engine would use in this browser. */
  backend: "webgpu" | "cpu";
  /** Why: a sentence for people (shown on the page). */
  reason: string;
  /** The WebGPU adapter's description when `backend` is "webgpu", else null. */
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
  /** "auto" (default): WebGPU when an adapter is offered, else the CPU with the reason;
   *  "webgpu" (or "gpu"): WebGPU or an error; "cpu": the CPU engine (wasm SIMD). */
  backend?: "auto" | "webgpu" | "gpu" | "cpu";
  /** Precision of the WebGPU KV cache: "f16" (default: half the memory, as
   *  llama.cpp's default) or "f32" (exact). The CPU's cache is f32. */
  kv_cache?: "f16" | "f32";
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

/// Every crate error crosses into JS as an `Error` with the crate's message.
fn js_error(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn from_js<T: serde::de::DeserializeOwned + Default>(
    v: Option<JsValue>,
    what: &str,
) -> Result<T, JsError> {
    let Some(v) = v.filter(|v| !v.is_undefined() && !v.is_null()) else {
        return Ok(T::default());
    };
    serde_wasm_bindgen::from_value(v).map_err(|e| JsError::new(&format!("{what}: {e}")))
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsError> {
    // Maps as plain objects, not `Map`s, so JSON.stringify shows them.
    let ser = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    v.serialize(&ser).map_err(|e| JsError::new(&e.to_string()))
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
    ) -> Result<WasmEngine, JsError> {
        let options: LoadOptions = from_js(options, "Engine.load options")?;
        let request: BackendRequest = options
            .backend
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(js_error)?;
        let gguf = crate::gguf::Gguf::parse(&bytes).map_err(js_error)?;
        let mut source = BytesSource(&bytes);
        if request == BackendRequest::Cpu {
            let runner = Runner::load(&gguf, &mut source, None)
                .await
                .map_err(js_error)?;
            let choice = BackendChoice::cpu("CPU backend, as asked");
            return Ok(WasmEngine { runner, choice });
        }
        let detected = detect().await?;
        let opened = if detected.webgpu {
            GpuContext::new().await
        } else {
            Err(crate::Error::NoGpu(detected.reason.clone()))
        };
        let cpu_because = |why: String| -> Result<BackendChoice, JsError> {
            match request {
                BackendRequest::Auto => Ok(BackendChoice::cpu(format!("CPU backend: {why}"))),
                _ => Err(JsError::new(&why)),
            }
        };
        let choice = match opened {
            Ok(mut ctx) => {
                // wgpu names the adapter by `info.description`, often empty in browsers.
                if ctx.adapter.name.trim().is_empty() {
                    ctx.adapter.name = detected.adapter.clone().unwrap_or_default();
                }
                match Runner::load(&gguf, &mut source, Some(ctx)).await {
                    Ok(mut runner) => {
                        runner.set_kv_precision(options.kv_cache.unwrap_or(KvPrecision::F16));
                        return Ok(WasmEngine {
                            runner,
                            choice: detected,
                        });
                    }
                    Err(e @ (crate::Error::GpuMemory { .. } | crate::Error::Gpu(_))) => {
                        cpu_because(format!("WebGPU could not hold the model ({e})"))?
                    }
                    Err(e) => return Err(js_error(e)),
                }
            }
            Err(e) => cpu_because(e.to_string())?,
        };
        let runner = Runner::load(&gguf, &mut source, None)
            .await
            .map_err(js_error)?;
        Ok(WasmEngine { runner, choice })
    }

    /// Which backend this engine runs on, and why.
    #[wasm_bindgen(getter, unchecked_return_type = "EngineBackend")]
    pub fn backend(&self) -> Result<JsValue, JsError> {
        self.choice.to_js()
    }

    /// Token ids of `text`; with `special`, special-token text becomes its id.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, JsError> {
        self.runner
            .tokenizer()
            .encode(text, special)
            .map_err(js_error)
    }

    /// Logits (vocab) of the last position after running `ids` from an empty cache.
    #[wasm_bindgen(unchecked_return_type = "Float32Array")]
    pub async fn logits(&self, ids: Vec<u32>) -> Result<JsValue, JsError> {
        let mut seq = self.runner.sequence(ids.len()).map_err(js_error)?;
        let logits = seq.feed(&ids).await.map_err(js_error)?;
        Ok(js_sys::Float32Array::from(&logits[..]).into())
    }

    /// Logits of every position of `ids` (positions * vocab, row-major) from an empty
    /// cache.
    #[wasm_bindgen(js_name = positionLogits, unchecked_return_type = "Float32Array")]
    pub async fn position_logits(&self, ids: Vec<u32>) -> Result<JsValue, JsError> {
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
    ) -> Result<JsValue, JsError> {
        let o: GenerateOptions = from_js(options, "generate options")?;
        let tk = self.runner.tokenizer();
        let text = if o.chat {
            tk.apply_chat_template(&[crate::tokenizer::Message::new("user", &prompt)], true)
                .map_err(js_error)?
        } else {
            prompt
        };
        let ids = tk.encode_prompt(&text).map_err(js_error)?;
        let sampler = crate::sampler::SamplerConfig {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            repetition_penalty: o.repetition_penalty,
            seed: o.seed,
            ..Default::default()
        };
        let capacity = crate::engine::DEFAULT_CONTEXT.min(ids.len() + o.max_tokens);
        let mut seq = self.runner.sequence(capacity).map_err(js_error)?;
        let g = crate::engine::generate(tk, &mut seq, &ids, o.max_tokens, sampler, |piece| {
            if let Some(f) = &on_text {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(piece));
            }
        })
        .await
        .map_err(js_error)?;
        to_js(&g)
    }

    /// Prefill and decode speed (and, on WebGPU, the decode step time of 1, 2, 4, 8
    /// streams): the same measurement and JSON as `edge-reason bench --json`.
    #[wasm_bindgen(unchecked_return_type = "BenchReport")]
    pub async fn bench(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BenchOptions")] options: Option<JsValue>,
    ) -> Result<JsValue, JsError> {
        let o: crate::bench::BenchOptions = from_js(options, "bench options")?;
        let report = crate::bench::run(&self.runner, &o)
            .await
            .map_err(js_error)?;
        to_js(&report)
    }
}

/// The crate version (the `version` field of Cargo.toml).
#[wasm_bindgen]
pub fn version() -> String {
    crate::version().to_string()
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

/// The outcome of [`detect`], before it becomes a JS object.
struct BackendChoice {
    webgpu: bool,
    reason: String,
    adapter: Option<String>,
}

impl BackendChoice {
    fn cpu(reason: impl Into<String>) -> Self {
        BackendChoice {
            webgpu: false,
            reason: reason.into(),
            adapter: None,
        }
    }

    fn to_js(&self) -> Result<JsValue, JsError> {
        let obj = Object::new();
        let backend = if self.webgpu { "webgpu" } else { "cpu" };
        set(&obj, "backend", &JsValue::from_str(backend))?;
        set(&obj, "reason", &JsValue::from_str(&self.reason))?;
        let adapter = match &self.adapter {
            Some(a) => JsValue::from_str(a),
            None => JsValue::NULL,
        };
        set(&obj, "adapter", &adapter)?;
        Ok(obj.into())
    }
}

async fn detect() -> Result<BackendChoice, JsError> {
    let global = js_sys::global();
    let navigator = get(&global, "navigator")?;
    if navigator.is_undefined() || navigator.is_null() {
        return Ok(BackendChoice::cpu(
            "navigator.gpu is missing: this browser has no WebGPU (no navigator here)",
        ));
    }
    let gpu = get(&navigator, "gpu")?;
    if gpu.is_undefined() || gpu.is_null() {
        return Ok(BackendChoice::cpu(
            "navigator.gpu is missing: this browser has no WebGPU",
        ));
    }
    let request: Function =
        match get(&gpu, "requestAdapter")?.dyn_into() {
            Ok(f) => f,
            Err(_) => return Ok(BackendChoice::cpu(
                "navigator.gpu.requestAdapter is not a function: this browser's WebGPU is unusable",
            )),
        };
    // requestAdapter() may throw synchronously or reject; either way there is no adapter.
    let promise: Promise = match request.call0(&gpu) {
        Ok(p) => Promise::resolve(&p),
        Err(e) => {
            return Ok(BackendChoice::cpu(format!(
                "no WebGPU adapter was offered (requestAdapter() threw: {})",
                describe_error(&e)
            )))
        }
    };
    let adapter = match JsFuture::from(promise).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(BackendChoice::cpu(format!(
                "no WebGPU adapter was offered (requestAdapter() failed: {})",
                describe_error(&e)
            )))
        }
    };
    if adapter.is_null() || adapter.is_undefined() {
        return Ok(BackendChoice::cpu("no WebGPU adapter was offered"));
    }
    let name = adapter_name(&adapter).await;
    Ok(BackendChoice {
        webgpu: true,
        reason: format!("WebGPU adapter available: {name}"),
        adapter: Some(name),
    })
}

/// A readable name for a GPUAdapter: `adapter.info` (current spec), else the older
/// `requestAdapterInfo()`; its description, else vendor / architecture / device.
async fn adapter_name(adapter: &JsValue) -> String {
    let mut info = get(adapter, "info").unwrap_or(JsValue::UNDEFINED);
    if info.is_undefined() || info.is_null() {
        if let Ok(f) = get(adapter, "requestAdapterInfo").and_then(|f| {
            f.dyn_into::<Function>()
                .map_err(|_| JsError::new("not a function"))
        }) {
            if let Ok(p) = f.call0(adapter) {
                info = JsFuture::from(Promise::resolve(&p))
                    .await
                    .unwrap_or(JsValue::UNDEFINED);
            }
        }
    }
    if info.is_undefined() || info.is_null() {
        return "WebGPU adapter".to_string();
    }
    let field = |k: &str| -> String {
        get(&info, k)
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let description = field("description");
    let parts: Vec<String> = ["vendor", "architecture", "device"]
        .iter()
        .map(|k| field(k))
        .filter(|s| !s.is_empty())
        .collect();
    match (description.is_empty(), parts.is_empty()) {
        (false, true) => description,
        (false, false) => format!("{description} ({})", parts.join(" / ")),
        (true, false) => parts.join(" / "),
        (true, true) => "WebGPU adapter".to_string(),
    }
}

fn get(target: &JsValue, key: &str) -> Result<JsValue, JsError> {
    Reflect::get(target, &JsValue::from_str(key))
        .map_err(|e| JsError::new(&format!("reading `{key}` failed: {}", describe_error(&e))))
}

fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsError> {
    Reflect::set(target, &JsValue::from_str(key), value)
        .map(|_| ())
        .map_err(|e| JsError::new(&format!("setting `{key}` failed: {}", describe_error(&e))))
}

/// A JS exception as text: its `message` when it has one, else `String(e)`.
fn describe_error(e: &JsValue) -> String {
    if let Ok(m) = Reflect::get(e, &JsValue::from_str("message")) {
        if let Some(s) = m.as_string() {
            return s;
        }
    }
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "unknown error".to_string())
}
