//! Which backend a browser offers: WebGPU when `navigator.gpu` hands out a hardware
//! adapter, else the CPU engine, with the reason in words.

use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::js::{describe_error, get, internal, set};
use crate::gpu::context::is_software_name;

/// The outcome of [`detect`], before it becomes a JS object.
pub(super) struct BackendChoice {
    pub webgpu: bool,
    pub reason: String,
    pub adapter: Option<String>,
    /// The adapter offered is a software one (SwiftShader, Chrome's fallback when it
    /// has no usable GPU): slower than the CPU engine, so `auto` passes it over, and
    /// it is used only when WebGPU is asked for.
    pub software: bool,
}

impl BackendChoice {
    pub fn cpu(reason: impl Into<String>) -> Self {
        BackendChoice {
            webgpu: false,
            reason: reason.into(),
            adapter: None,
            software: false,
        }
    }

    pub fn to_js(&self) -> Result<JsValue, JsValue> {
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

pub(super) async fn detect() -> Result<BackendChoice, JsValue> {
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
    let (name, fallback) = adapter_name(&adapter).await;
    if fallback || is_software_name(&name) {
        return Ok(BackendChoice {
            webgpu: false,
            reason: format!(
                "the only WebGPU adapter is a software one ({name}), slower than the CPU \
                 engine; load with backend \"webgpu\" to use it anyway"
            ),
            adapter: Some(name),
            software: true,
        });
    }
    Ok(BackendChoice {
        webgpu: true,
        reason: format!("WebGPU adapter available: {name}"),
        adapter: Some(name),
        software: false,
    })
}

/// A readable name for a GPUAdapter: `adapter.info` (current spec), else the older
/// `requestAdapterInfo()`; its description, else vendor / architecture / device. With
/// whether it is a fallback adapter (`info.isFallbackAdapter`, or the older
/// `adapter.isFallbackAdapter`).
async fn adapter_name(adapter: &JsValue) -> (String, bool) {
    let flag = |o: &JsValue| get(o, "isFallbackAdapter").ok().and_then(|v| v.as_bool());
    let old_flag = flag(adapter).unwrap_or(false);
    let mut info = get(adapter, "info").unwrap_or(JsValue::UNDEFINED);
    if info.is_undefined() || info.is_null() {
        if let Ok(f) = get(adapter, "requestAdapterInfo").and_then(|f| {
            f.dyn_into::<Function>()
                .map_err(|_| internal("not a function"))
        }) {
            if let Ok(p) = f.call0(adapter) {
                info = JsFuture::from(Promise::resolve(&p))
                    .await
                    .unwrap_or(JsValue::UNDEFINED);
            }
        }
    }
    if info.is_undefined() || info.is_null() {
        return ("WebGPU adapter".to_string(), old_flag);
    }
    let fallback = flag(&info).unwrap_or(old_flag);
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
    let name = match (description.is_empty(), parts.is_empty()) {
        (false, true) => description,
        (false, false) => format!("{description} ({})", parts.join(" / ")),
        (true, false) => parts.join(" / "),
        (true, true) => "WebGPU adapter".to_string(),
    };
    (name, fallback)
}
