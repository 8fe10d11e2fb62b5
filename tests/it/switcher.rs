//! The switcher's features come from the prompt's own prefill: the pooled final hidden
//! states, with no extra forward pass.

use crate::common;

use common::tiny_llama;
use edge_reason::gguf::Gguf;
use edge_reason::kv_cache::KvCache;
use edge_reason::model::{BytesSource, Logits, Model};
use edge_reason::reason::Pooler;

#[test]
fn pooled_hidden_states_are_what_the_head_sees_and_add_up_across_chunks() {
    let bytes = tiny_llama().bytes();
    let gguf = Gguf::parse(&bytes).unwrap();
    let model = Model::load(&gguf, &mut BytesSource(&bytes)).unwrap();
    let c = model.config.clone();
    let prompt = [3u32, 14, 15, 92, 65, 35, 89, 79];

    let mut cache = KvCache::new(&c, 16);
    let (logits, pooled) = model
        .forward_pooled(&prompt, &mut cache, Logits::All)
        .unwrap();
    assert_eq!(pooled.len(), c.n_embd);
    // The head is linear: sum over rows of the logits = head(sum of the normed rows).
    let mut row = vec![0f32; c.n_embd];
    for v in 0..c.vocab_size {
        model.head().row_to_f32(v, &mut row);
        let via_pool: f32 = row.iter().zip(&pooled).map(|(w, h)| w * h).sum();
        let summed: f32 = (0..prompt.len())
            .map(|r| logits[r * c.vocab_size + v])
            .sum();
        assert!(
            (via_pool - summed).abs() < 1e-3 * (1.0 + summed.abs()),
            "vocab {v}: {via_pool} vs {summed}"
        );
    }

    // Two chunks: their sums add up to the one-chunk sum (positions continue in the cache).
    let mut cache = KvCache::new(&c, 16);
    let (_, first) = model
        .forward_pooled(&prompt[..5], &mut cache, Logits::None)
        .unwrap();
    let (_, second) = model
        .forward_pooled(&prompt[5..], &mut cache, Logits::None)
        .unwrap();
    for ((a, b), whole) in first.iter().zip(&second).zip(&pooled) {
        assert!((a + b - whole).abs() < 1e-4, "{a} + {b} vs {whole}");
    }
    // With alpha = 1 the pooler keeps the last chunk's mean; with one chunk, the mean.
    let mut p = Pooler::new(1.0);
    p.add_chunk(&first, 5);
    p.add_chunk(&second, 3);
    assert!((p.features().unwrap()[0] - second[0] / 3.0).abs() < 1e-6);
}
