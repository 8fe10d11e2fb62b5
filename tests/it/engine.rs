//! Engine behaviour independent of a reference: chunking, cache limits, bad arguments.

use crate::common;

use common::{fixture, tiny_llama, Meta};
use edge_reason::engine::Engine;
use edge_reason::gguf::Gguf;
use edge_reason::model::Logits;
use edge_reason::Error;

fn tiny_models() -> Vec<(&'static str, Engine)> {
    vec![
        (
            "writer llama",
            Engine::from_bytes(&tiny_llama().bytes()).unwrap(),
        ),
        (
            "qwen2",
            Engine::from_file(&fixture("tiny_qwen2.gguf")).unwrap(),
        ),
        (
            "llama q4k",
            Engine::from_file(&fixture("tiny_llama_q4k.gguf")).unwrap(),
        ),
    ]
}

#[test]
fn one_chunk_equals_token_by_token_bit_for_bit() {
    let ids: Vec<u32> = (0..23).map(|i| (i * 37 % 250) as u32).collect();
    for (name, e) in tiny_models() {
        let mut whole = e.new_cache(64);
        let all = e.model.forward(&ids, &mut whole, Logits::All).unwrap();
        let vocab = e.model.config.vocab_size;
        let mut step = e.new_cache(64);
        for (i, &t) in ids.iter().enumerate() {
            let l = e.model.forward(&[t], &mut step, Logits::Last).unwrap();
            let row = &all[i * vocab..(i + 1) * vocab];
            for (j, (a, b)) in l.iter().zip(row).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{name}: position {i}, logit {j}: {a} vs {b}"
                );
            }
        }
        assert_eq!(whole.len(), step.len());
    }
}

#[test]
fn uneven_chunks_give_the_same_logits() {
    let ids: Vec<u32> = (0..40).map(|i| (i * 13 % 250) as u32).collect();
    for (name, e) in tiny_models() {
        let mut a = e.new_cache(64);
        let want = e.model.forward(&ids, &mut a, Logits::Last).unwrap();
        let mut b = e.new_cache(64);
        for chunk in [&ids[..7], &ids[7..8], &ids[8..33], &ids[33..]] {
            let got = e.model.forward(chunk, &mut b, Logits::Last).unwrap();
            if chunk.as_ptr_range().end == ids.as_ptr_range().end {
                assert_eq!(got, want, "{name}");
            }
        }
    }
}

#[test]
fn the_cache_refuses_to_overflow_and_can_rewind() {
    let e = Engine::from_bytes(&tiny_llama().bytes()).unwrap();
    let mut cache = e.new_cache(8);
    e.model
        .forward(&[1, 2, 3, 4, 5], &mut cache, Logits::None)
        .unwrap();
    let err = e
        .model
        .forward(&[1, 2, 3, 4], &mut cache, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                tokens: 9,
                capacity: 8
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(), 5, "a refused call leaves the cache as it was");
    // Rewinding and replaying gives the same logits as the first time.
    let first = e.model.forward(&[6], &mut cache, Logits::Last).unwrap();
    cache.truncate(5);
    let again = e.model.forward(&[6], &mut cache, Logits::Last).unwrap();
    assert_eq!(first, again);
}

#[test]
fn out_of_vocabulary_ids_and_empty_input_are_errors() {
    let e = Engine::from_bytes(&tiny_llama().bytes()).unwrap();
    let mut cache = e.new_cache(8);
    let err = e
        .model
        .forward(&[300], &mut cache, Logits::Last)
        .unwrap_err();
    assert!(
        err.to_string().contains("outside the vocabulary of 300"),
        "{err}"
    );
    assert!(e.model.forward(&[], &mut cache, Logits::Last).is_err());
    assert!(e.prefill(&[], &mut cache).is_err());
}

#[test]
fn gguf_version_2_loads_like_version_3() {
    let mut b = tiny_llama().bytes();
    let v3 = Engine::from_bytes(&b).unwrap();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = Engine::from_bytes(&b).unwrap();
    let (mut c2, mut c3) = (v2.new_cache(4), v3.new_cache(4));
    assert_eq!(
        v2.model.forward(&[1, 2], &mut c2, Logits::Last).unwrap(),
        v3.model.forward(&[1, 2], &mut c3, Logits::Last).unwrap()
    );
}

#[test]
fn the_tensor_directory_gives_byte_ranges_inside_the_file() {
    let bytes = std::fs::read(fixture("tiny_qwen2.gguf")).unwrap();
    let g = edge_reason::gguf::Gguf::parse(&bytes).unwrap();
    let mut ranges: Vec<_> = g.tensors.iter().map(|t| t.byte_range()).collect();
    ranges.sort_by_key(|r| r.start);
    assert!(ranges[0].start >= g.data_offset);
    for w in ranges.windows(2) {
        assert!(w[0].end <= w[1].start, "overlapping tensors {w:?}");
    }
    assert!(ranges.last().unwrap().end <= bytes.len() as u64);
    assert_eq!(g.data_offset % 32, 0);
}

#[test]
fn a_header_is_read_in_growing_contiguous_prefixes_and_stops_there() {
    // A header of several MiB (a long string array), then the tensor data.
    let mut w = tiny_llama();
    w.meta(
        "padding",
        Meta::Strs(
            (0..200_000)
                .map(|i| format!("padding string {i}"))
                .collect(),
        ),
    );
    let bytes = w.bytes();
    let whole = Gguf::parse(&bytes).unwrap();
    let mut reads: Vec<(u64, usize)> = Vec::new();
    let g = Gguf::read_header(bytes.len() as u64, |offset, buf| {
        reads.push((offset, buf.len()));
        buf.copy_from_slice(&bytes[offset as usize..][..buf.len()]);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        (g.data_offset, g.tensors.len()),
        (whole.data_offset, whole.tensors.len())
    );
    assert!(reads.len() > 1, "{reads:?}");
    let mut end = 0;
    for &(offset, len) in &reads {
        assert_eq!(offset, end, "each read continues the last: {reads:?}");
        end += len as u64;
    }
    assert!(
        end <= 2 * whole.data_offset,
        "read {end} bytes for a {}-byte header",
        whole.data_offset
    );

    // A file cut inside its header is the parser's truncation error, not a read failure.
    let cut = &bytes[..whole.data_offset as usize / 2];
    let err = Gguf::read_header(cut.len() as u64, |offset, buf| {
        buf.copy_from_slice(&cut[offset as usize..][..buf.len()]);
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}
