//! The plain-f32 CPU reference the browser's WebGPU parity test checks against
//! (tests/browser/page.test.mjs): the default model with every weight dequantized to
//! f32 and f32 activations, i.e. the same math the GPU kernels do, written with the
//! CPU ops the parity tests check against llama.cpp.
//!
//! The browser cannot run this reference itself (the f32 weights are 540 MB), so it is
//! committed as `tests/fixtures/smollm2_f32_reference.json`, written by
//!
//!   cargo test --release --test it -- --ignored f32_reference::write_f32_reference_fixture
//!
//! and `f32_reference_fixture_is_current` fails when the committed file no longer
//! matches what the code computes.

use crate::common;

use common::{default_model, fixture, Dequantize, PARITY_PROMPTS};
use edge_reason::gguf::Gguf;
use edge_reason::kv_cache::KvCache;
use edge_reason::model::{BytesSource, Logits, Model};
use edge_reason::sampler::argmax;
use edge_reason::tokenizer::Tokenizer;
use serde_json::{json, Value};

const FIXTURE: &str = "smollm2_f32_reference.json";
/// Logits kept per position: enough to check values around the top-1.
const TOP: usize = 5;
/// Greedy tokens per prompt (fewer when the model ends its answer).
const GREEDY: usize = 32;

/// The reference: for each prompt, its ids (`encode_prompt`), the top logits at every
/// position, and the greedy continuation up to the end of generation.
fn compute() -> Value {
    let bytes = std::fs::read(default_model()).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let model = Model::load_with(&gguf, &mut BytesSource(&bytes), &mut Dequantize).unwrap();
    let v = model.config.vocab_size;
    let prompts: Vec<Value> = PARITY_PROMPTS
        .iter()
        .map(|prompt| {
            let ids = tokenizer.encode_prompt(prompt).unwrap();
            let mut cache = KvCache::new(&model.config, ids.len() + GREEDY);
            let logits = model.forward(&ids, &mut cache, Logits::All).unwrap();
            let top: Vec<Vec<(usize, f32)>> = logits
                .chunks(v)
                .map(|row| {
                    let mut order: Vec<usize> = (0..v).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                    order[..TOP].iter().map(|&i| (i, row[i])).collect()
                })
                .collect();
            let mut next = argmax(&logits[logits.len() - v..]);
            let mut greedy = Vec::new();
            while greedy.len() < GREEDY && !tokenizer.is_end_of_generation(next) {
                greedy.push(next);
                next = argmax(&model.forward(&[next], &mut cache, Logits::Last).unwrap());
            }
            json!({ "text": prompt, "ids": ids, "top": top, "greedy": greedy })
        })
        .collect();
    json!({
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "reference": "edge-reason CPU ops, weights dequantized to f32, f32 activations",
        "written_by": "cargo test --release --test it -- --ignored f32_reference::write_f32_reference_fixture",
        "prompts": prompts,
    })
}

#[test]
#[ignore = "writes the fixture; run by hand after a change to the reference math"]
fn write_f32_reference_fixture() {
    let text = serde_json::to_string(&compute()).unwrap();
    std::fs::write(fixture(FIXTURE), text + "\n").unwrap();
}

#[test]
fn f32_reference_fixture_is_current() {
    let path = fixture(FIXTURE);
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let now = compute();
    for (k, (c, n)) in committed["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(now["prompts"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(c["ids"], n["ids"], "prompt {k}: token ids");
        assert_eq!(c["greedy"], n["greedy"], "prompt {k}: greedy tokens");
        for (p, (cr, nr)) in c["top"]
            .as_array()
            .unwrap()
            .iter()
            .zip(n["top"].as_array().unwrap())
            .enumerate()
        {
            assert_eq!(cr[0][0], nr[0][0], "prompt {k} position {p}: top-1");
            for (ce, ne) in cr.as_array().unwrap().iter().zip(nr.as_array().unwrap()) {
                let (a, b) = (ce[1].as_f64().unwrap(), ne[1].as_f64().unwrap());
                assert!(
                    (a - b).abs() < 1e-3,
                    "prompt {k} position {p}: logit {a} committed, {b} now; rewrite the fixture if the change is intended"
                );
            }
        }
    }
}
