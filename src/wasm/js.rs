//! Small helpers for reading and writing JS values without panicking.

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;

/// A JS `Error` with a stable `code` property (e.g. "UNSUPPORTED_MODEL") and a message
/// that says what to do. Every failure that crosses into JS is one of these.
pub fn coded_error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = Reflect::set(&e, &JsValue::from_str("code"), &JsValue::from_str(code));
    e.into()
}

/// A crate error as a coded JS `Error`.
pub fn crate_error(e: crate::Error) -> JsValue {
    coded_error(e.code(), &browser_message(&e))
}

/// An error's message as a page's user reads it: what the CLI's messages say with flags
/// (`--backend cpu`) said with the load option instead.
fn browser_message(e: &crate::Error) -> String {
    match e {
        crate::Error::NoGpu(why) => format!(
            "no WebGPU: {why}; load with backend \"cpu\" (or \"auto\", which falls back to the CPU), or use a browser with WebGPU enabled"
        ),
        other => other.to_string(),
    }
}

/// A failure of the JS boundary itself (a property that cannot be read or set).
pub fn internal(message: &str) -> JsValue {
    coded_error("INTERNAL", message)
}

/// A bad argument from the caller.
pub fn invalid(message: &str) -> JsValue {
    coded_error("INVALID_ARGUMENT", message)
}

pub fn get(target: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    Reflect::get(target, &JsValue::from_str(key))
        .map_err(|e| internal(&format!("reading `{key}` failed: {}", describe_error(&e))))
}

pub fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(target, &JsValue::from_str(key), value)
        .map(|_| ())
        .map_err(|e| internal(&format!("setting `{key}` failed: {}", describe_error(&e))))
}

/// A JS exception as text: its `message` when it has one, else `String(e)`.
pub fn describe_error(e: &JsValue) -> String {
    if let Ok(m) = Reflect::get(e, &JsValue::from_str("message")) {
        if let Some(s) = m.as_string() {
            return s;
        }
    }
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "unknown error".to_string())
}
