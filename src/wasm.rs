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
//! - `class Engine`: the CPU engine on a whole GGUF file held in memory
//!   (`Engine.fromBytes(bytes)`, `tokenize`, `logits`, `generate`). Streaming from browser storage
//!   and the Web Worker wrapper come with the storage issue.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

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
const TS_GENERATION: &'static str = r#"
/** What `Engine.generate()` returns. */
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
"#;

/// Every crate error crosses into JS as an `Error` with the crate's message.
fn js_error(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A loaded model and tokenizer running on the CPU (wasm SIMD).
#[wasm_bindgen(js_name = Engine)]
pub struct WasmEngine {
    engine: crate::engine::Engine,
}

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// Loads a whole GGUF file (`bytes`): checks the header, every tensor's name and
    /// shape, and builds the tokenizer.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &[u8]) -> Result<WasmEngine, JsError> {
        let engine = crate::engine::Engine::from_bytes(bytes).map_err(js_error)?;
        Ok(WasmEngine { engine })
    }

    /// Token ids of `text`; with `special`, special-token text becomes its id.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, JsError> {
        self.engine
            .tokenizer
            .encode(text, special)
            .map_err(js_error)
    }

    /// Logits (vocab) of the last position after running `ids` from an empty cache.
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>, JsError> {
        let mut cache = self.engine.new_cache(ids.len());
        self.engine.prefill(ids, &mut cache).map_err(js_error)
    }

    /// Generates up to `max_tokens` after `prompt` (wrapped in the model's chat template
    /// as a user message when `chat`); `temperature` 0 is greedy.
    #[wasm_bindgen(unchecked_return_type = "Generation")]
    pub fn generate(
        &self,
        prompt: &str,
        chat: bool,
        max_tokens: usize,
        temperature: f32,
        seed: u32,
    ) -> Result<JsValue, JsError> {
        let tk = &self.engine.tokenizer;
        let text = if chat {
            tk.apply_chat_template(&[crate::tokenizer::Message::new("user", prompt)], true)
                .map_err(js_error)?
        } else {
            prompt.to_string()
        };
        let ids = tk.encode_prompt(&text).map_err(js_error)?;
        let sampler = crate::sampler::SamplerConfig {
            temperature,
            seed: seed as u64,
            ..Default::default()
        };
        let context = crate::engine::DEFAULT_CONTEXT;
        let g = self
            .engine
            .generate(&ids, max_tokens, sampler, context, |_| {})
            .map_err(js_error)?;
        serde_wasm_bindgen::to_value(&g).map_err(|e| JsError::new(&e.to_string()))
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
