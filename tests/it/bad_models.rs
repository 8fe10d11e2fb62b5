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

/// A GGUF v3 header: `n_kv` metadata entries from `kv` (already encoded), no tensors.
fn header(n_kv: u64, kv: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend(kv);
    b
}

fn key(name: &str, value_type: u32) -> Vec<u8> {
    let mut b = (name.len() as u64).to_le_bytes().to_vec();
    b.extend(name.as_bytes());
    b.extend(value_type.to_le_bytes());
    b
}

#[test]
fn a_length_near_the_top_of_u64_is_a_truncation_not_an_overflow() {
    // A 48-byte file whose one string claims u64::MAX - 4 bytes: the "truncated" error
    // names where it would end, saturated, instead of wrapping (a panic in debug).
    let mut kv = key("general.name", 8);
    kv.extend((u64::MAX - 4).to_le_bytes());
    let f = header(1, &kv);
    let err = edge_reason::gguf::Gguf::parse(&f).unwrap_err();
    match err {
        Error::Truncated { start, end, .. } => assert!(end >= start, "{start}..{end}"),
        other => panic!("expected a truncation, got {other}"),
    }
}

#[test]
fn arrays_cannot_ask_for_more_memory_than_the_metadata_budget() {
    // Sixteen million one-byte items (16 MB of file) would take 512 MB once parsed.
    let n: u64 = 16 << 20;
    let mut kv = key("tokenizer.ggml.scores", 9);
    kv.extend(0u32.to_le_bytes()); // u8 items
    kv.extend(n.to_le_bytes());
    kv.extend(std::iter::repeat_n(7u8, n as usize));
    let f = header(1, &kv);
    let err = edge_reason::gguf::Gguf::parse(&f).unwrap_err();
    assert_eq!(err.code(), "CORRUPT_MODEL", "{err}");
    assert!(err.to_string().contains("MiB once parsed"), "{err}");
}

#[test]
fn a_header_past_its_size_limit_is_refused_without_reading_the_file() {
    // A string that claims 100 MiB of a 200 MiB "file": read_header stops at its cap
    // instead of reading (and holding) the whole file.
    let mut kv = key("general.name", 8);
    kv.extend((100u64 << 20).to_le_bytes());
    let f = header(1, &kv);
    let file_len = 200u64 << 20;
    let mut read = 0u64;
    let err = edge_reason::gguf::Gguf::read_header(file_len, |offset, buf| {
        read = read.max(offset + buf.len() as u64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *f.get(offset as usize + i).unwrap_or(&b'x');
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(err.code(), "CORRUPT_MODEL", "{err}");
    assert!(err.to_string().contains("header runs past"), "{err}");
    assert!(
        read <= edge_reason::gguf::MAX_HEADER_BYTES,
        "read {read} bytes"
    );
}
