//! Tokenizer parity with llama.cpp for every supported pre-tokenizer, on small
//! vocab-only GGUFs (tests/fixtures/vocab_<pre>.gguf), and for a Hugging Face
//! `tokenizer.json` equivalent to SmolLM2's. Fixtures come from
//! tests/fixtures/make_fixtures.py (`--only tokenizers` regenerates just these).

use crate::common;

use std::collections::BTreeMap;

use common::{default_model, fixture};
use edge_reason::gguf::Gguf;
use edge_reason::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct PretokFixture {
    models: BTreeMap<String, PretokModel>,
}

#[derive(Deserialize)]
struct PretokModel {
    file: String,
    cases: Vec<PretokCase>,
}

#[derive(Deserialize)]
struct PretokCase {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
}

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<CorpusCase>,
}

#[derive(Deserialize)]
struct CorpusCase {
    text: String,
    ids: Vec<u32>,
    #[serde(default)]
    ids_no_special: Option<Vec<u32>>,
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn pretok() -> PretokFixture {
    read_json("tokenizer_pretok.json")
}

/// Mismatch report line, with the pieces of both id lists so the split is visible.
fn mismatch(tk: &Tokenizer, label: &str, text: &str, ours: &[u32], llama: &[u32]) -> String {
    let pieces = |ids: &[u32]| -> Vec<String> {
        ids.iter()
            .map(|&i| tk.decode(&[i]).unwrap_or_else(|_| format!("<{i}>")))
            .collect()
    };
    format!(
        "{label} {text:?}\n  ours   {ours:?} {:?}\n  llama  {llama:?} {:?}",
        pieces(ours),
        pieces(llama)
    )
}

/// Encodes every case of the `pre` model (special tokens parsed and not) and
/// compares with llama.cpp; panics with all mismatches.
fn check_pre_tokenizer(pre: &str) {
    let fx = pretok();
    let model = fx
        .models
        .get(pre)
        .unwrap_or_else(|| panic!("tokenizer_pretok.json has no model `{pre}`"));
    let bytes = std::fs::read(fixture(&model.file)).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    let tk = Tokenizer::from_gguf(&gguf).unwrap();
    assert!(model.cases.len() >= 40, "{} cases", model.cases.len());
    let mut failures = Vec::new();
    for case in &model.cases {
        let got = tk.encode(&case.text, true).unwrap();
        if got != case.ids {
            failures.push(mismatch(&tk, "(special)", &case.text, &got, &case.ids));
        }
        let got = tk.encode(&case.text, false).unwrap();
        if got != case.ids_no_special {
            failures.push(mismatch(
                &tk,
                "(no special)",
                &case.text,
                &got,
                &case.ids_no_special,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "pre-tokenizer `{pre}` ({}): {} of {} encodings differ from llama.cpp:\n{}",
        model.file,
        failures.len(),
        2 * model.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_covers_the_supported_pre_tokenizers() {
    let fx = pretok();
    for pre in ["gpt-2", "llama-bpe", "qwen2", "smollm"] {
        assert!(
            fx.models.contains_key(pre),
            "no `{pre}` model in the fixture"
        );
    }
}

#[test]
fn gpt2_pre_tokenizer_matches_llama_cpp() {
    check_pre_tokenizer("gpt-2");
}

#[test]
fn llama3_pre_tokenizer_matches_llama_cpp() {
    check_pre_tokenizer("llama-bpe");
}

#[test]
fn qwen2_pre_tokenizer_matches_llama_cpp() {
    check_pre_tokenizer("qwen2");
}

#[test]
fn smollm_pre_tokenizer_matches_llama_cpp() {
    check_pre_tokenizer("smollm");
}

#[test]
fn default_pre_tokenizer_matches_llama_cpp() {
    check_pre_tokenizer("default");
}

#[test]
fn smollm2_tokenizer_json_matches_llama_cpp() {
    let json = std::fs::read(fixture("smollm2_tokenizer.json")).unwrap();
    let bytes = std::fs::read(default_model()).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    let tk = Tokenizer::from_tokenizer_json(&json, &gguf).unwrap();
    let corpus: Corpus = read_json("tokenizer_corpus.json");
    assert!(corpus.cases.len() >= 40);
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let got = tk.encode(&case.text, true).unwrap();
        if got != case.ids {
            failures.push(mismatch(&tk, "(special)", &case.text, &got, &case.ids));
        }
        if let Some(want) = &case.ids_no_special {
            let got = tk.encode(&case.text, false).unwrap();
            if &got != want {
                failures.push(mismatch(&tk, "(no special)", &case.text, &got, want));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Special tokens and the template still come from the GGUF.
    assert_eq!(tk.eos, Some(2));
    assert!(tk.is_end_of_generation(2));
}
