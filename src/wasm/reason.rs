//! The reasoning runtime's JavaScript surface: resident LoRA adapters by name, the
//! switcher, one request's events streamed to a callback, and its benchmark.

use js_sys::Function;
use wasm_bindgen::prelude::*;

use super::js::{crate_error as js_error, invalid};
use super::{from_js, to_js, WasmEngine};
use crate::lora::Adapter;
use crate::reason::{BudgetHint, Heads, Mode, ReasonOptions, Switcher, Verifier};
use crate::runner::LoadedAdapter;
use crate::tokenizer::Message;

#[wasm_bindgen(typescript_custom_section)]
const TS_REASON: &'static str = r#"
/** What `Engine.loadAdapter()` resolves to. */
export interface AdapterSummary {
  name: string;
  rank: number;
  /** The linear layers it adapts: "q_proj", ..., "down_proj". */
  targets: string[];
  /** Bytes its weights take where the model runs. */
  bytes: number;
  /** How it was trained to be told its thinking budget (its budget_hint.json), if it was. */
  budget_hint: { template: string; buckets: number[] } | null;
}

/** One request of `Engine.reason()`. */
export interface ReasonRequest {
  /** The user's message (wrapped in the chat template unless `raw`)... */
  prompt?: string;
  /** ...or the whole conversation. */
  messages?: { role: string; content: string }[];
  /** Use `prompt` as it is, without the chat template. */
  raw?: boolean;
  /** Which loaded adapter reasons (default: the only one loaded). */
  adapter?: string;
  /** States the thinking budget at the end of the (last) user message, for adapters
   *  trained with budget buckets: `{budget}` in `template` becomes the smallest bucket
   *  at least `options.budget.think`. Not in chat mode. Default: the adapter's own
   *  (its budget_hint.json); `null` states none. */
  budget_hint?: { template: string; buckets?: number[] } | null;
  options?: ReasonOptions;
}

/** Options of one request; the defaults are the CLI's. */
export interface ReasonOptions {
  mode?: "auto" | "chat" | "reason";
  /** Candidates when reasoning, 1 to 16 (default 1). */
  n?: number;
  /** Thinking tokens before `</think>` is forced, and answer tokens after it. */
  budget?: { think: number; answer: number };
  /** Tokens of a direct (chat) answer. */
  max_tokens?: number;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  /** Candidate i samples with seed `seed + i`. */
  seed?: number;
  /** Weigh votes by each candidate's mean answer-token log-probability. */
  weighted?: boolean;
  /** Stop the candidates still running once the majority cannot change (default true). */
  early_stop?: boolean;
  think_prefix?: string;
  force_suffix?: string;
}

/** The events of one request, in order. */
export type ReasonEvent =
  | { type: "prefill"; tokens: number; total: number }
  | { type: "route"; mode: "chat" | "reason"; pReason: number | null }
  | { type: "token"; candidate: number; text: string; phase: "think" | "answer" }
  | { type: "candidate_done"; candidate: number; answer: string | null; tokens: number;
      logprob: number; reason: "eos" | "budget" | "length" | "consensus" }
  | { type: "vote"; answer: string | null;
      tally: { key: string; votes: number; weight: number; first: number }[];
      weights: number[]; stoppedEarly: number }
  | { type: "done"; stats: { promptTokens: number; ttftMs: number; prefillTokS: number;
      decodeTokS: number; tokens: number; kvBytes: number; tokensSaved: number } };
"#;

/// One request from JS.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ReasonRequest {
    prompt: Option<String>,
    messages: Option<Vec<Message>>,
    raw: bool,
    adapter: Option<String>,
    /// States the thinking budget at the end of the user's message (adapters trained
    /// with budget buckets); not in chat mode. Absent: the adapter's own; `null`: none.
    #[serde(deserialize_with = "present")]
    budget_hint: Option<Option<BudgetHint>>,
    options: ReasonOptions,
}

/// A field that is there, even as `null` (`Some(None)`), apart from one that is not
/// (`None`, by `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// A resident adapter: its weights where the model runs, and how it was trained to be
/// told its thinking budget (its `budget_hint.json`), which requests to it follow.
pub(super) struct Resident {
    name: String,
    loaded: LoadedAdapter,
    hint: Option<BudgetHint>,
}

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// Makes a LoRA adapter resident under `name` (replacing one of that name): the
    /// text of `adapter_config.json` and the bytes of `adapter_model.safetensors`
    /// (PEFT f32/f16/bf16, or our INT8 form), checked against the model, and the text
    /// of its `budget_hint.json` when it was trained with its budget stated.
    #[wasm_bindgen(js_name = loadAdapter, unchecked_return_type = "AdapterSummary")]
    pub fn load_adapter(
        &mut self,
        name: String,
        config_json: &str,
        weights: &[u8],
        budget_hint_json: Option<String>,
    ) -> Result<JsValue, JsValue> {
        let hint = budget_hint_json
            .map(|json| BudgetHint::from_json(&json))
            .transpose()
            .map_err(js_error)?;
        let adapter =
            Adapter::from_peft(config_json, weights, self.runner.config()).map_err(js_error)?;
        let mut summary = serde_json::json!({
            "name": name,
            "rank": adapter.rank,
            "targets": adapter.targets.iter().map(|t| t.peft_name()).collect::<Vec<_>>(),
            "budget_hint": hint,
        });
        let loaded = self.runner.load_adapter(adapter).map_err(js_error)?;
        summary["bytes"] = loaded.n_bytes().into();
        self.adapters.retain(|a| a.name != name);
        self.adapters.push(Resident { name, loaded, hint });
        to_js(&summary)
    }

    /// Drops the adapter `name`; whether there was one.
    #[wasm_bindgen(js_name = unloadAdapter)]
    pub fn unload_adapter(&mut self, name: &str) -> bool {
        let before = self.adapters.len();
        self.adapters.retain(|a| a.name != name);
        self.adapters.len() != before
    }

    /// Names of the resident adapters, in load order.
    #[wasm_bindgen(getter)]
    pub fn adapters(&self) -> Vec<String> {
        self.adapters.iter().map(|a| a.name.clone()).collect()
    }

    /// Loads the switcher (the text of `switcher.json` and the bytes of
    /// `switcher.safetensors`), replacing any other.
    #[wasm_bindgen(js_name = loadSwitcher)]
    pub fn load_switcher(&mut self, config_json: &str, weights: &[u8]) -> Result<(), JsValue> {
        let d = self.runner.config().n_embd;
        self.switcher = Some(Switcher::from_files(config_json, weights, d).map_err(js_error)?);
        Ok(())
    }

    /// Loads the verifier head (the text of `verifier.json` and the bytes of
    /// `verifier.safetensors`), replacing any other: with `weighted`, it weighs each
    /// finished candidate in the vote.
    #[wasm_bindgen(js_name = loadVerifier)]
    pub fn load_verifier(&mut self, config_json: &str, weights: &[u8]) -> Result<(), JsValue> {
        let d = self.runner.config().n_embd;
        self.verifier = Some(Verifier::from_files(config_json, weights, d).map_err(js_error)?);
        Ok(())
    }

    /// Runs one request of the reasoning runtime; `on_event` receives each event as it
    /// happens (route, tokens, candidates done, the vote, done). Resolves to the winning
    /// answer's key (null when no candidate answered). If `on_event` throws, the request
    /// stops at once and rejects with what it threw: that is how a caller aborts.
    #[wasm_bindgen(unchecked_return_type = "string | null")]
    pub async fn reason(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ReasonRequest")] request: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((event: ReasonEvent) => void) | undefined")]
        on_event: Option<Function>,
    ) -> Result<JsValue, JsValue> {
        let r: ReasonRequest = from_js(Some(request), "reason request")?;
        let tk = self.runner.tokenizer();
        let adapter = self.pick_adapter(r.adapter.as_deref())?;
        let hint = r
            .budget_hint
            .unwrap_or_else(|| adapter.and_then(|a| a.hint.clone()))
            .filter(|_| r.options.mode != Mode::Chat);
        let think = r.options.budget.think;
        let state = |m: &str| hint.as_ref().map_or(m.to_string(), |h| h.apply(m, think));
        // A raw prompt is the model's own text, control tokens parsed; a chat's message
        // contents are text (Tokenizer::encode_chat).
        let ids =
            match (r.prompt, r.messages) {
                (Some(p), None) => tk.encode_user_prompt(&state(&p), !r.raw),
                (None, Some(mut m)) if !m.is_empty() && !r.raw => {
                    if let Some(last) = m.iter_mut().rev().find(|m| m.role == "user") {
                        last.content = state(&last.content);
                    }
                    tk.encode_chat(&m, true)
                }
                _ => return Err(invalid(
                    "reason: give `prompt` (optionally `raw`) or a non-empty `messages`, not both",
                )),
            }
            .map_err(js_error)?;
        let mut failed = None;
        let heads = Heads {
            switcher: self.switcher.as_ref(),
            verifier: self.verifier.as_ref(),
        };
        let loaded = adapter.map(|a| &a.loaded);
        // A callback that throws stops the request; its exception is what rejects.
        let run = self
            .runner
            .reason(loaded, heads, &ids, &r.options, |event| {
                let Some(f) = &on_event else { return Ok(()) };
                let thrown = to_js(event).and_then(|v| f.call1(&JsValue::NULL, &v));
                thrown.map(drop).map_err(|e| {
                    failed = Some(e);
                    crate::Error::Aborted("the onEvent callback threw".into())
                })
            })
            .await;
        match (run, failed) {
            (_, Some(thrown)) => Err(thrown),
            (Err(e), None) => Err(js_error(e)),
            (Ok(winner), None) => Ok(winner.map_or(JsValue::NULL, |w| JsValue::from_str(&w))),
        }
    }

    /// The reasoning runtime's benchmark (`edge-reason bench-reason --json`) with the
    /// adapter `options.adapter` (a random one when none is loaded).
    #[wasm_bindgen(js_name = benchReason)]
    pub async fn bench_reason(&self, options: Option<JsValue>) -> Result<JsValue, JsValue> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Options {
            adapter: Option<String>,
            #[serde(flatten)]
            bench: crate::bench::reason::ReasonBenchOptions,
        }
        let o: Options = from_js(options, "benchReason options")?;
        let adapter = match o.adapter.as_deref() {
            Some(name) => self.pick_adapter(Some(name))?.map(|a| &a.loaded),
            None => None,
        };
        let report = crate::bench::reason::run(&self.runner, adapter, &o.bench)
            .await
            .map_err(js_error)?;
        to_js(&report)
    }
}

impl WasmEngine {
    /// The adapter `name`, or the only one loaded when no name is given.
    fn pick_adapter(&self, name: Option<&str>) -> Result<Option<&Resident>, JsValue> {
        match name {
            Some(n) => self
                .adapters
                .iter()
                .find(|a| a.name == n)
                .map(Some)
                .ok_or_else(|| {
                    js_error(crate::Error::InvalidArgument(format!(
                        "no adapter named \"{n}\" is loaded (loaded: {:?})",
                        self.adapters()
                    )))
                }),
            None if self.adapters.len() > 1 => Err(js_error(crate::Error::InvalidArgument(
                "several adapters are loaded: name the one to reason with in `adapter`".into(),
            ))),
            None => Ok(self.adapters.first()),
        }
    }
}
