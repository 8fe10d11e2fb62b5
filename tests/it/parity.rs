//! Parity with llama.cpp: token ids, last-position logits and greedy continuations,
//! against fixtures produced by tests/fixtures/make_fixtures.py (llama-cpp-python,
//! F32 KV cache, no flash attention, so the reference is the plain math).

use crate::common;

use std::sync::OnceLock;

use common::{default_model, fixture};
use edge_reason::engine::Engine;
use edge_reason::model::Logits;
use edge_reason::sampler::argmax;
use serde::Deserialize;

#[derive(Deserialize)]
struct LogitsFixture {
    prompts: Vec<PromptCase>,
}

#[derive(Deserialize)]
pub(crate) struct PromptCase {
    #[serde(default)]
    text: Option<String>,
    pub ids: Vec<u32>,
    /// The largest logits of the last position (256, or 16 in smollm2_quants.json),
    /// descending.
    pub top: Vec<(u32, f32)>,
    pub greedy: Vec<u32>,
}

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<TokenCase>,
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
    #[serde(default)]
    ids_no_special: Option<Vec<u32>>,
}

fn smollm2() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::from_file(&default_model()).expect("default model loads"))
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Logits closer than this are the same computation up to f32 summation order.
const EXACT: f32 = 1e-3;

/// How greedy continuations are compared.
#[derive(Clone, Copy)]
enum Greedy {
    /// Our own free-running greedy tokens must equal the reference's.
    Identical,
    /// Teacher-forced along the reference's tokens: at every step our argmax must be
    /// the reference's token, or within `tie` logits of it (a near-tie that rounding
    /// noise of that size can flip).
    NearTiesAllowed { tie: f32 },
}

/// What one prompt's comparison measured.
struct Measured {
    max_abs_diff: f32,
    top1_equal: bool,
    greedy_ok: bool,
    /// Steps where our argmax differed from the reference token (teacher-forced).
    near_ties: usize,
    /// Whether our free-running greedy tokens equal the reference's.
    free_running_equal: bool,
}

fn free_running(engine: &Engine, case: &PromptCase) -> Vec<u32> {
    let mut cache = engine.new_cache(case.ids.len() + case.greedy.len() + 1);
    let mut logits = engine.prefill(&case.ids, &mut cache).unwrap();
    let mut got = Vec::new();
    for _ in 0..case.greedy.len() {
        let t = argmax(&logits);
        got.push(t);
        if got.len() == case.greedy.len() {
            break;
        }
        logits = engine
            .model
            .forward(&[t], &mut cache, Logits::Last)
            .unwrap();
    }
    got
}

fn compare(engine: &Engine, case: &PromptCase, greedy: Greedy) -> Measured {
    let mut cache = engine.new_cache(case.ids.len() + case.greedy.len() + 1);
    let mut logits = engine.prefill(&case.ids, &mut cache).unwrap();
    let max_abs_diff = case
        .top
        .iter()
        .map(|&(id, want)| (logits[id as usize] - want).abs())
        .fold(0f32, f32::max);
    let top1_equal = argmax(&logits) == case.top[0].0;
    let free_running_equal = free_running(engine, case) == case.greedy;
    let (mut greedy_ok, mut near_ties) = (true, 0);
    if let Greedy::NearTiesAllowed { tie } = greedy {
        for (i, &want) in case.greedy.iter().enumerate() {
            let got = argmax(&logits);
            if got != want {
                near_ties += 1;
                let margin = logits[got as usize] - logits[want as usize];
                if margin > tie {
                    eprintln!("  step {i}: ours {got} beats reference {want} by {margin:.3}");
                    greedy_ok = false;
                }
            }
            if i + 1 < case.greedy.len() {
                logits = engine
                    .model
                    .forward(&[want], &mut cache, Logits::Last)
                    .unwrap();
            }
        }
    } else {
        greedy_ok = free_running_equal;
    }
    Measured {
        max_abs_diff,
        top1_equal,
        greedy_ok,
        near_ties,
        free_running_equal,
    }
}

/// Checks every prompt of a fixture; `tolerance` bounds the max |logit difference|
/// over the reference's 256 highest logits.
fn check_logits(
    engine: &Engine,
    fixture_name: &str,
    tolerance: f32,
    greedy: Greedy,
    min_prompts: usize,
    min_exact: usize,
) {
    let fx: LogitsFixture = read_json(fixture_name);
    check_prompts(
        engine,
        fixture_name,
        &fx,
        tolerance,
        greedy,
        min_prompts,
        min_exact,
    );
}

/// [`check_logits`] on prompts already read (`fixture_name` labels them).
fn check_prompts(
    engine: &Engine,
    fixture_name: &str,
    fx: &LogitsFixture,
    tolerance: f32,
    greedy: Greedy,
    min_prompts: usize,
    min_exact: usize,
) {
    assert!(
        fx.prompts.len() >= min_prompts,
        "{fixture_name}: too few prompts"
    );
    let mut failures = Vec::new();
    let mut worst = 0f32;
    let mut top1_equal = 0;
    let mut exact = 0;
    for (i, case) in fx.prompts.iter().enumerate() {
        let m = compare(engine, case, greedy);
        worst = worst.max(m.max_abs_diff);
        let label = case
            .text
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(30)
            .collect::<String>();
        eprintln!(
            "{fixture_name} #{i} ({} tokens) {label:?}: max|diff| {:.4}, top1 {}, greedy ok {} (near ties {}), free-running identical {}",
            case.ids.len(),
            m.max_abs_diff,
            m.top1_equal,
            m.greedy_ok,
            m.near_ties,
            m.free_running_equal
        );
        // The reference's own margin between its two best tokens: below the tolerance,
        // rounding noise of that size may legitimately pick the other one.
        let ref_margin = case.top[0].1 - case.top[1].1;
        let top1_ok = m.top1_equal || ref_margin < tolerance;
        top1_equal += m.top1_equal as usize;
        exact += (m.max_abs_diff < EXACT) as usize;
        if !top1_ok || !m.greedy_ok || m.max_abs_diff > tolerance {
            failures.push(format!(
                "#{i} {label:?}: max|diff| {:.4} (tolerance {tolerance}), top1 equal {}, greedy ok {}",
                m.max_abs_diff, m.top1_equal, m.greedy_ok
            ));
        }
    }
    eprintln!(
        "{fixture_name}: worst max|diff| {worst:.4}, top-1 equal on {top1_equal} of {}",
        fx.prompts.len()
    );
    assert!(
        exact >= min_exact,
        "{fixture_name}: only {exact} prompts match to {EXACT}, expected {min_exact}"
    );
    assert!(
        top1_equal >= min_prompts,
        "{fixture_name}: top-1 equal on only {top1_equal} prompts"
    );
    assert!(
        failures.is_empty(),
        "{fixture_name}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tokenizer_matches_llama_cpp_on_the_corpus() {
    let corpus: Corpus = read_json("tokenizer_corpus.json");
    assert!(corpus.cases.len() >= 40);
    let tk = &smollm2().tokenizer;
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let got = tk.encode(&case.text, true).unwrap();
        if got != case.ids {
            failures.push(format!(
                "{:?}\n  ours   {got:?}\n  llama  {:?}",
                case.text, case.ids
            ));
        }
        if let Some(want) = &case.ids_no_special {
            let got = tk.encode(&case.text, false).unwrap();
            if &got != want {
                failures.push(format!(
                    "(no special) {:?}\n  ours   {got:?}\n  llama  {want:?}",
                    case.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_round_trips_the_corpus() {
    let corpus: Corpus = read_json("tokenizer_corpus.json");
    let tk = &smollm2().tokenizer;
    for case in &corpus.cases {
        assert_eq!(
            tk.decode(&case.ids).unwrap(),
            case.text,
            "ids {:?}",
            case.ids
        );
    }
}

#[test]
fn chat_template_renders_smollm2_chatml() {
    use edge_reason::tokenizer::Message;
    let out = smollm2()
        .tokenizer
        .apply_chat_template(&[Message::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn smollm2_logits_and_greedy_match_llama_cpp() {
    // Single-token prompts match llama.cpp bit for bit (same Q8 activation rounding).
    // Longer prompts differ by up to ~0.55 because attention sums in another order
    // and SmolLM2's residual stream carries outliers of ~22,000: a last-bit change
    // flips the Q8 rounding of a block whose step is 1/127 of its outlier. That is the
    // same size as the model's own quantization noise (a float reference vs one with
    // Q8 activations differs by 0.13-0.45 on single tokens, see fixtures/README.md).
    // llama.cpp itself, switched from the fixture's F32 KV cache to its default F16,
    // differs from the fixture by up to 0.72 and keeps only 5 of 14 greedy
    // continuations identical (bench/llama_cpp_self_consistency.py): free-running
    // greedy equality is not a property even llama.cpp has, so greedy is checked
    // teacher-forced, with near-ties within the tolerance allowed.
    check_logits(
        smollm2(),
        "smollm2_logits.json",
        0.75,
        Greedy::NearTiesAllowed { tie: 0.75 },
        13,
        2,
    );
}

#[test]
fn tiny_qwen2_logits_and_greedy_match_llama_cpp() {
    let engine = Engine::from_file(&fixture("tiny_qwen2.gguf")).unwrap();
    assert_eq!(engine.model.config.arch, edge_reason::model::Arch::Qwen2);
    assert!(engine.model.output.is_some(), "untied output head");
    // No outliers in this model: every op matches ggml's rounding, so the tolerance
    // is float noise and greedy continuations must be identical.
    check_logits(
        &engine,
        "tiny_qwen2_logits.json",
        EXACT,
        Greedy::Identical,
        6,
        6,
    );
}

#[test]
fn tiny_k_quant_llama_logits_and_greedy_match_llama_cpp() {
    let engine = Engine::from_file(&fixture("tiny_llama_q4k.gguf")).unwrap();
    // Exact on at least half the prompts; on the others one activation lies on a Q8
    // rounding boundary (12.500002 in the fixture README) and the last bit of an f32
    // sum decides which way it rounds, which moves logits by 0.19: the float64 numpy
    // emulation of ggml's rounding in make_fixtures.py shows the same 0.19 on one of
    // them. Which prompts hit a boundary depends on summation order (3 or 4 of 6 here).
    // One such flip is what the tolerance allows.
    check_logits(
        &engine,
        "tiny_llama_q4k_logits.json",
        0.25,
        Greedy::NearTiesAllowed { tie: 0.25 },
        6,
        3,
    );
}

/// `tests/fixtures/smollm2_quants.json`: the default model in the formats people
/// download (llama.cpp's tensor types for each), with llama.cpp's logits on each file.
#[derive(Deserialize)]
pub(crate) struct QuantsFixture {
    pub formats: Vec<QuantFormat>,
}

#[derive(Deserialize)]
pub(crate) struct QuantFormat {
    /// "Q4_K_M", ...
    pub name: String,
    /// Its file under models/derived/ (made by examples/requantize.rs).
    pub file: String,
    #[serde(flatten)]
    logits: LogitsFixture,
}

impl QuantFormat {
    pub fn prompts(&self) -> &[PromptCase] {
        &self.logits.prompts
    }
}

pub(crate) fn quants_fixture() -> QuantsFixture {
    read_json("smollm2_quants.json")
}

#[test]
fn the_default_model_in_each_download_format_matches_llama_cpp() {
    // Q4_K_M (Q4_K, Q5_0, Q6_K and Q8_0 tensors), Q5_K_M (Q5_K, Q5_1, Q6_K, Q8_0), Q6_K
    // and Q8_0 files of the default model: the same model as smollm2_logits.json, with
    // ggml's activation rounding for each weight type (Q8_0 for Q5_0 and Q8_0, Q8_1 for
    // Q5_1, Q8_K for the K-quants), so the reasons of its 0.75 hold. The K-quant dots sum
    // their floats in another order than ggml's AVX2 ones, which moves even one-token
    // prompts by 0.05-0.07 (Q4_1's are bit-exact), and 30 layers with outliers of ~22,000
    // carry that to 0.57 (Q4_K_M), 0.70 (Q5_K_M), 0.86 (Q6_K) on 37-token prompts
    // (measured): 1.0 bounds them, the fixture README's advice for SmolLM2, while a
    // wrong bit layout or scale is off by several logits. Top-1 must match wherever
    // llama.cpp's own top-2 gap exceeds that bound.
    for format in quants_fixture().formats {
        let engine = Engine::from_file(&common::derived_model(&format.file)).unwrap();
        check_prompts(
            &engine,
            &format.name,
            &format.logits,
            1.0,
            Greedy::NearTiesAllowed { tie: 1.0 },
            12,
            0,
        );
    }
}
