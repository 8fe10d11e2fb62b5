//! Broken model files get a clear error that names the problem, never a panic.

use crate::common;

use common::{tiny_llama, Meta};
use edge_reason::engine::Engine;
use edge_reason::Error;

fn load(bytes: &[u8]) -> Result<Engine, Error> {
    Engine::from_bytes(bytes)
}

#[test]
fn the_tiny_model_loads_and_runs() {
    let engine = load(&tiny_llama().bytes()).expect("tiny model loads");
    let ids = engine.tokenizer.encode("hello<|im_end|>", true).unwrap();
    assert_eq!(*ids.last().unwrap(), 299, "special token parsed: {ids:?}");
    assert!(ids.contains(&258), "merges applied (`hell`): {ids:?}");
    let mut cache = engine.new_cache(16);
    let logits = engine.prefill(&ids, &mut cache).unwrap();
    assert_eq!(logits.len(), 300);
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_magic_is_named() {
    let mut b = tiny_llama().bytes();
    b[..4].copy_from_slice(b"GGML");
    let e = load(&b).err().unwrap();
    assert!(matches!(e, Error::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

#[test]
fn unsupported_version_is_named() {
    let mut b = tiny_llama().bytes();
    b[4..8].copy_from_slice(&9u32.to_le_bytes());
    let e = load(&b).err().unwrap();
    assert!(matches!(e, Error::UnsupportedVersion(9)), "{e}");
}

#[test]
fn truncated_tensor_data_is_named() {
    let b = tiny_llama().bytes();
    let e = load(&b[..b.len() - 100]).err().unwrap();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("output_norm.weight"), "{e}");
    assert!(e.to_string().contains("download it again"), "{e}");
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut w = tiny_llama();
    w.tensors[3].1 = 99;
    let e = load(&w.bytes()).err().unwrap();
    assert!(
        matches!(e, Error::UnknownTensorType { type_id: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&w.tensors[3].0), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let mut w = tiny_llama();
    w.tensors.retain(|t| t.0 != "blk.1.ffn_up.weight");
    let e = load(&w.bytes()).err().unwrap();
    assert!(
        e.to_string().contains("no tensor `blk.1.ffn_up.weight`"),
        "{e}"
    );
}

#[test]
fn wrong_tensor_shape_is_named() {
    let mut w = tiny_llama();
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.0 == "blk.0.attn_k.weight")
        .unwrap();
    t.2 = vec![32, 64];
    let e = load(&w.bytes()).err().unwrap();
    assert!(matches!(e, Error::TensorShape { .. }), "{e}");
}

#[test]
fn unsupported_architecture_is_named() {
    let mut w = tiny_llama();
    w.meta[0].1 = Meta::Str("mamba".into());
    let e = load(&w.bytes()).err().unwrap();
    assert!(
        e.to_string().contains("unsupported architecture `mamba`"),
        "{e}"
    );
}

#[test]
fn every_truncation_fails_cleanly() {
    let b = tiny_llama().bytes();
    let header_end = edge_reason::gguf::Gguf::parse(&b).unwrap().data_offset as usize;
    let mut cuts: Vec<usize> = (0..header_end.min(4096)).collect();
    cuts.extend((header_end..b.len()).step_by(997));
    for cut in cuts {
        let r = std::panic::catch_unwind(|| load(&b[..cut]).err());
        match r {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a file cut at {cut} of {} bytes loaded", b.len()),
            Err(_) => panic!("a file cut at {cut} bytes panicked"),
        }
    }
}

#[test]
fn bit_flipped_headers_never_panic() {
    let b = tiny_llama().bytes();
    let header_end = edge_reason::gguf::Gguf::parse(&b).unwrap().data_offset as usize;
    let mut state = 0x1234_5678u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for round in 0..3000 {
        let mut f = b.clone();
        for _ in 0..1 + round % 4 {
            let i = next() % header_end;
            f[i] ^= 1 << (next() % 8);
        }
        let r = std::panic::catch_unwind(|| {
            if let Ok(engine) = load(&f) {
                // A flip that still loads must still run or fail cleanly.
                let mut cache = engine.new_cache(8);
                let _ = engine.prefill(&[1, 2, 3], &mut cache);
            }
        });
        assert!(r.is_ok(), "round {round}: a bit-flipped header panicked");
    }
}
