//! A PEFT adapter trained on a Hugging Face Llama applies as transformers + PEFT apply
//! it: golden logits from `tests/fixtures/make_peft_fixture.py` (float64), for a tiny
//! random Llama converted to GGUF as llama.cpp does (q/k rows permuted for its RoPE).

use std::path::PathBuf;

use edge_reason::engine::Engine;
use edge_reason::kv_cache::KvCache;
use edge_reason::lora::Adapter;
use edge_reason::model::Logits;

/// Logits here are within this of transformers' float64 ones (f32 arithmetic, |x| < 20).
const TOLERANCE: f32 = 2e-3;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_llama")
}

fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0.0, 0), |m, (i, d)| if d > m.0 { (d, i) } else { m })
}

#[test]
fn a_peft_adapter_gives_the_logits_transformers_and_peft_give() {
    let dir = fixture();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("logits.json")).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        golden[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let ids: Vec<u32> = golden["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let engine = Engine::from_bytes(&std::fs::read(dir.join("model.gguf")).unwrap()).unwrap();
    let model = &engine.model;
    let adapter = Adapter::from_dir(&dir, &model.config).unwrap();

    let run = |a: Option<&Adapter>| {
        let mut cache = KvCache::new(&model.config, ids.len());
        model
            .forward_with(&ids, &mut cache, Logits::All, a)
            .unwrap()
    };
    let (base, want_base) = (run(None), floats("base"));
    let (d, at) = max_diff(&base, &want_base);
    assert!(
        d < TOLERANCE,
        "base model: |diff| {d} at {at}: the GGUF is not what transformers ran"
    );

    let (lora, want_lora) = (run(Some(&adapter)), floats("lora"));
    let (d, at) = max_diff(&lora, &want_lora);
    let (effect, _) = max_diff(&want_lora, &want_base);
    assert!(effect > 1.0, "the adapter moves the logits ({effect})");
    assert!(
        d < TOLERANCE,
        "with the adapter: |diff| {d} at {at} (the adapter moves logits by {effect})"
    );
}
