//! LoRA adapters: PEFT files made here (random A/B, fixed seed) load into the right
//! layers with the right scale, in f32/f16/bf16 and our INT8 form, and adapters that do
//! not fit the model are refused with a clear error.

use crate::common;

use common::tiny_llama;
use edge_reason::cpu::ops::RopeStyle;
use edge_reason::gguf::Gguf;
use edge_reason::kv_cache::KvCache;
use edge_reason::lora::{int8_safetensors, Adapter, LoraMatrix, Target};
use edge_reason::model::{Arch, Config};
use edge_reason::model::{BytesSource, Logits, Model};
use half::{bf16, f16};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use safetensors::{tensor::TensorView, Dtype};

fn tiny() -> Config {
    Config {
        arch: Arch::Llama,
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 16,
        n_ff: 96,
        vocab_size: 100,
        context_length: 128,
        rope_base: 10000.0,
        rope_style: RopeStyle::Interleaved,
        rms_eps: 1e-5,
    }
}

/// PEFT tensors for `targets` of every layer of `c`: name -> (rows, cols, values).
fn peft_tensors(
    c: &Config,
    r: usize,
    targets: &[Target],
    seed: u64,
) -> Vec<(String, usize, usize, Vec<f32>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..c.n_layer {
        for &t in targets {
            let base = t.peft_prefix(i);
            let (o, inp) = t.shape(c);
            let mut m = |rows: usize, cols: usize| {
                (0..rows * cols)
                    .map(|_| rng.random_range(-0.5f32..0.5))
                    .collect::<Vec<_>>()
            };
            out.push((format!("{base}.lora_A.weight"), r, inp, m(r, inp)));
            out.push((format!("{base}.lora_B.weight"), o, r, m(o, r)));
        }
    }
    out
}

fn serialize(tensors: &[(String, usize, usize, Vec<f32>)], dtype: Dtype) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, r, c, v)| {
            let data: Vec<u8> = match dtype {
                Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => v
                    .iter()
                    .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => v
                    .iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            (n.clone(), vec![*r, *c], data)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, d)| (n.clone(), TensorView::new(dtype, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn config_json(r: usize, alpha: f64, targets: &[&str], rslora: bool) -> String {
    serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "use_rslora": rslora}).to_string()
}

const ALL: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

#[test]
fn a_peft_adapter_loads_into_every_layer_with_its_scale_folded_into_b() {
    let c = tiny();
    let tensors = peft_tensors(&c, 8, &Target::ALL, 1);
    for (dtype, tol) in [(Dtype::F32, 0.0), (Dtype::F16, 1e-3), (Dtype::BF16, 4e-3)] {
        let a = Adapter::from_peft(
            &config_json(8, 16.0, &ALL, false),
            &serialize(&tensors, dtype),
            &c,
        )
        .unwrap();
        assert_eq!(a.rank, 8);
        assert_eq!(a.scale, 2.0);
        let pair = a.pair(1, Target::Down).unwrap();
        let (_, rows, cols, want_b) = tensors
            .iter()
            .find(|t| t.0.ends_with("layers.1.mlp.down_proj.lora_B.weight"))
            .unwrap();
        assert_eq!((pair.out, pair.rank), (*rows, *cols));
        assert!(
            matches!(pair.b, LoraMatrix::F32 { .. }),
            "float files stay f32"
        );
        for (got, want) in pair.b.to_f32().iter().zip(want_b) {
            assert!(
                (got - 2.0 * want).abs() <= tol * 2.0,
                "{dtype:?}: {got} vs 2 * {want}"
            );
        }
    }
    let rs = Adapter::from_peft(
        &config_json(16, 16.0, &["q_proj"], true),
        &serialize(&peft_tensors(&c, 16, &[Target::Q], 2), Dtype::F32),
        &c,
    )
    .unwrap();
    assert_eq!(rs.scale, 4.0, "rsLoRA: alpha / sqrt(r)");
    assert!(rs.pair(0, Target::K).is_none());
}

#[test]
fn apply_adds_b_times_a_x() {
    let c = tiny();
    let a = Adapter::from_peft(
        &config_json(4, 4.0, &["k_proj"], false),
        &serialize(&peft_tensors(&c, 4, &[Target::K], 3), Dtype::F32),
        &c,
    )
    .unwrap();
    let p = a.pair(0, Target::K).unwrap();
    let (pa, pb) = (p.a.to_f32(), p.b.to_f32());
    let x: Vec<f32> = (0..p.inp).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![1.0f32; p.out];
    p.apply(&x, &mut y);
    for (o, &got) in y.iter().enumerate() {
        let want: f64 = 1.0
            + (0..p.rank)
                .map(|k| {
                    pb[o * p.rank + k] as f64
                        * (0..p.inp)
                            .map(|i| pa[k * p.inp + i] as f64 * x[i] as f64)
                            .sum::<f64>()
                })
                .sum::<f64>();
        assert!((got as f64 - want).abs() < 1e-4, "row {o}: {got} vs {want}");
    }
}

#[test]
fn the_int8_file_reads_back_like_the_f32_file() {
    let c = tiny();
    let tensors = peft_tensors(&c, 8, &Target::ALL, 4);
    let f32_adapter = Adapter::from_peft(
        &config_json(8, 8.0, &ALL, false),
        &serialize(&tensors, Dtype::F32),
        &c,
    )
    .unwrap();
    let int8 = int8_safetensors(
        &tensors
            .iter()
            .map(|(n, r, c, v)| (n.clone(), v.clone(), *r, *c))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        int8.len() * 2 < serialize(&tensors, Dtype::F32).len(),
        "INT8 (with a scale per row) is well under half of f32"
    );
    let q = Adapter::from_peft(&config_json(8, 8.0, &ALL, false), &int8, &c).unwrap();
    assert!(
        q.n_bytes() * 3 < f32_adapter.n_bytes(),
        "held as INT8 in memory: {} vs {} bytes",
        q.n_bytes(),
        f32_adapter.n_bytes()
    );
    for (pf, pq) in f32_adapter.layers.iter().zip(&q.layers) {
        for (a, b) in pf.iter().flatten().zip(pq.iter().flatten()) {
            within_half_a_step(&a.a, &b.a);
            within_half_a_step(&a.b, &b.b);
        }
    }
}

/// Every value of the INT8 matrix `q` is within half a step (its row's max |value| /
/// 127) of the float matrix `f`'s.
fn within_half_a_step(f: &LoraMatrix, q: &LoraMatrix) {
    assert!(matches!(q, LoraMatrix::Int8(_)), "the INT8 form stays INT8");
    let (vf, vq) = (f.to_f32(), q.to_f32());
    for (row_f, row_q) in vf.chunks(f.cols()).zip(vq.chunks(q.cols())) {
        let step = row_f.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (x, y) in row_f.iter().zip(row_q) {
            assert!((x - y).abs() <= step * 0.5 * 1.0001 + 1e-7, "{x} vs {y}");
        }
    }
}

#[test]
fn export_to_int8_keeps_names_and_reads_back_like_the_original() {
    // What `edge-reason export-adapter` writes from a PEFT file (here BF16, as PEFT
    // saves half-precision adapters): every weight within half an INT8 step of its row's
    // scale, through the same loader (scaling and RoPE row order included).
    let c = tiny();
    let tensors = peft_tensors(&c, 8, &Target::ALL, 6);
    let bf16 = serialize(&tensors, Dtype::BF16);
    let config = config_json(8, 16.0, &ALL, false);
    let original = Adapter::from_peft(&config, &bf16, &c).unwrap();
    let int8 = edge_reason::lora::int8_peft(&bf16).unwrap();
    assert!(int8.len() < bf16.len(), "{} vs {}", int8.len(), bf16.len());
    let q = Adapter::from_peft(&config, &int8, &c).unwrap();
    for (pf, pq) in original.layers.iter().zip(&q.layers) {
        for (a, b) in pf.iter().flatten().zip(pq.iter().flatten()) {
            within_half_a_step(&a.a, &b.a);
            within_half_a_step(&a.b, &b.b);
        }
    }
    let e = edge_reason::lora::int8_peft(&bf16[..bf16.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_model.safetensors"), "{e}");
}

#[test]
fn adapters_that_do_not_fit_are_refused_with_a_clear_error() {
    let c = tiny();
    let good = serialize(&peft_tensors(&c, 8, &[Target::Q], 5), Dtype::F32);
    let err = |json: String, st: &[u8], c: &Config| {
        Adapter::from_peft(&json, st, c).unwrap_err().to_string()
    };

    // Rank in the config differs from the tensors.
    let e = err(config_json(4, 8.0, &["q_proj"], false), &good, &c);
    assert!(
        e.contains("has shape [8, 64]") && e.contains("needs [4, 64]"),
        "{e}"
    );
    // A model with a different width.
    let wider = Config {
        n_embd: 128,
        head_dim: 32,
        ..tiny()
    };
    let e = err(config_json(8, 8.0, &["q_proj"], false), &good, &wider);
    assert!(e.contains("another model"), "{e}");
    // A target with no tensors.
    let e = err(config_json(8, 8.0, &["q_proj", "v_proj"], false), &good, &c);
    assert!(e.contains("missing tensor") && e.contains("v_proj"), "{e}");
    // A module we cannot adapt.
    let e = err(config_json(8, 8.0, &["lm_head"], false), &good, &c);
    assert!(e.contains("`lm_head`"), "{e}");
    // More layers than the model.
    let shallow = Config {
        n_layer: 1,
        ..tiny()
    };
    let e = err(config_json(8, 8.0, &["q_proj"], false), &good, &shallow);
    assert!(e.contains("layer 1") && e.contains("1 layers"), "{e}");
    // Not safetensors, not JSON.
    assert!(err(config_json(8, 8.0, &["q_proj"], false), b"junk", &c)
        .contains("adapter_model.safetensors"));
    assert!(err("{".into(), &good, &c).contains("adapter_config.json"));
    let e = Adapter::from_peft("{}", &good, &c).unwrap_err();
    assert_eq!(e.code(), "INVALID_ADAPTER");
}

/// GGUF dims of target `t`'s weight in block `i`, as the tensor name.
fn gguf_name(i: usize, t: Target) -> String {
    let n = match t {
        Target::Q => "attn_q",
        Target::K => "attn_k",
        Target::V => "attn_v",
        Target::O => "attn_output",
        Target::Gate => "ffn_gate",
        Target::Up => "ffn_up",
        Target::Down => "ffn_down",
    };
    format!("blk.{i}.{n}.weight")
}

#[test]
fn lora_forward_equals_the_forward_with_merged_dense_weights() {
    let mut w = tiny_llama();
    let bytes = w.bytes();
    let gguf = Gguf::parse(&bytes).unwrap();
    let model = Model::load(&gguf, &mut BytesSource(&bytes)).unwrap();
    let c = model.config.clone();
    let adapter = Adapter::from_peft(
        &config_json(8, 16.0, &ALL, false),
        &serialize(&peft_tensors(&c, 8, &Target::ALL, 11), Dtype::F32),
        &c,
    )
    .unwrap();

    // The same model with W + s B A written into every targeted weight.
    for (i, layer) in adapter.layers.iter().enumerate() {
        for t in Target::ALL {
            let p = layer[t as usize].as_ref().unwrap();
            let (pa, pb) = (p.a.to_f32(), p.b.to_f32());
            let (_, _, _, raw) = w
                .tensors
                .iter_mut()
                .find(|x| x.0 == gguf_name(i, t))
                .unwrap();
            let mut dense: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            for o in 0..p.out {
                for k in 0..p.inp {
                    dense[o * p.inp + k] += (0..p.rank)
                        .map(|r| pb[o * p.rank + r] * pa[r * p.inp + k])
                        .sum::<f32>();
                }
            }
            *raw = dense.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
    }
    let merged_bytes = w.bytes();
    let merged_gguf = Gguf::parse(&merged_bytes).unwrap();
    let merged = Model::load(&merged_gguf, &mut BytesSource(&merged_bytes)).unwrap();

    let tokens = [1u32, 17, 42, 99, 256, 7];
    let mut cache = KvCache::new(&c, 16);
    let with_lora = model
        .forward_with(&tokens, &mut cache, Logits::All, Some(&adapter))
        .unwrap();
    let mut cache = KvCache::new(&c, 16);
    let dense = merged.forward(&tokens, &mut cache, Logits::All).unwrap();
    let mut cache = KvCache::new(&c, 16);
    let base = model.forward(&tokens, &mut cache, Logits::All).unwrap();

    let max_diff = with_lora
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let effect = with_lora
        .iter()
        .zip(&base)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-3, "LoRA vs merged: max |diff| {max_diff}");
    assert!(
        effect > 100.0 * max_diff,
        "the adapter must change the logits ({effect}) far more than the tolerance"
    );
}

#[test]
fn a_prompt_encoded_without_lora_then_decoded_with_it_matches_a_fresh_run() {
    // The shared-prefix contract: the prompt's cache is built with LoRA off; decoding
    // with LoRA on from it equals a fresh run doing the same in one go.
    let bytes = tiny_llama().bytes();
    let gguf = Gguf::parse(&bytes).unwrap();
    let model = Model::load(&gguf, &mut BytesSource(&bytes)).unwrap();
    let c = model.config.clone();
    let adapter = Adapter::from_peft(
        &config_json(4, 8.0, &["q_proj", "v_proj", "down_proj"], false),
        &serialize(
            &peft_tensors(&c, 4, &[Target::Q, Target::V, Target::Down], 12),
            Dtype::F32,
        ),
        &c,
    )
    .unwrap();
    let prompt = [5u32, 6, 7, 8, 9];
    let mut shared = KvCache::new(&c, 32);
    model.forward(&prompt, &mut shared, Logits::None).unwrap();
    // Two candidates from one prompt cache.
    let mut a = shared.clone();
    let mut b = shared.clone();
    let la = model
        .forward_with(&[20], &mut a, Logits::Last, Some(&adapter))
        .unwrap();
    let lb = model
        .forward_with(&[20], &mut b, Logits::Last, None)
        .unwrap();
    let mut fresh = KvCache::new(&c, 32);
    model.forward(&prompt, &mut fresh, Logits::None).unwrap();
    let lf = model
        .forward_with(&[20], &mut fresh, Logits::Last, Some(&adapter))
        .unwrap();
    assert_eq!(la, lf, "from the shared cache, bit for bit");
    assert_ne!(la, lb, "LoRA on and off differ");
}

/// The adapters committed for the default model fit it: the one that ships
/// (www/reasoning/adapter) and the budget-stated one docs/results.md measures
/// (train/artifacts/budget-sft), which carries how it was trained to be told its budget.
#[test]
fn the_committed_adapters_fit_the_default_model() {
    use edge_reason::reason::BudgetHint;
    let engine = edge_reason::engine::Engine::from_file(&common::default_model()).unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (shipped, budget) = (
        root.join("www/reasoning/adapter"),
        root.join("train/artifacts/budget-sft"),
    );
    for dir in [&shipped, &budget] {
        let a = Adapter::from_dir(dir, &engine.model.config).unwrap();
        assert_eq!((a.rank, a.targets.len()), (16, 7), "{}", dir.display());
    }
    assert_eq!(BudgetHint::from_adapter_dir(&shipped).unwrap(), None);
    let hint = BudgetHint::from_adapter_dir(&budget).unwrap().unwrap();
    assert_eq!(hint.buckets(), [32, 64, 128]);
    assert_eq!(hint.apply("q", 40), "q\n\nThink for at most 64 tokens.");
}
