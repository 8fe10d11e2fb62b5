//! The reasoning runtime on the CPU engine, with a tiny model and a random adapter made
//! here: routing, budget forcing at exactly B, candidates equal to single runs with
//! the same seeds, early consensus, and chat mode equal to plain generation.

use crate::common;

use common::{random_peft_adapter, tiny_llama};
use edge_reason::engine::{generate, CpuSequence, Engine};
use edge_reason::lora::Adapter;
use edge_reason::reason::{reason_cpu, Budget, Event, Mode, Phase, ReasonOptions};
use edge_reason::sampler::SamplerConfig;

fn engine() -> Engine {
    Engine::from_bytes(&tiny_llama().bytes()).unwrap()
}

/// A random rank-4 adapter on every linear layer of `e`'s model.
fn adapter(e: &Engine) -> Adapter {
    let (json, st) = random_peft_adapter(&e.model.config, 4, 9);
    Adapter::from_peft(&json, &st, &e.model.config).unwrap()
}

/// Reason mode with `n` candidates, a budget of `think` + `answer` tokens, greedy.
fn reasoning(n: usize, think: usize, answer: usize) -> ReasonOptions {
    ReasonOptions {
        mode: Mode::Reason,
        n,
        budget: Budget { think, answer },
        temperature: 0.0,
        ..Default::default()
    }
}

fn run(e: &Engine, a: Option<&Adapter>, o: &ReasonOptions) -> Vec<Event> {
    let prompt = e.tokenizer.encode("hello hell", false).unwrap();
    let mut events = Vec::new();
    reason_cpu(e, a, None, &prompt, o, |ev| {
        events.push(ev.clone());
        Ok(())
    })
    .unwrap();
    events
}

fn tokens_of(events: &[Event], candidate: usize) -> Vec<(String, Phase)> {
    events
        .iter()
        .filter_map(|ev| match ev {
            Event::Token {
                candidate: c,
                text,
                phase,
            } if *c == candidate => Some((text.clone(), *phase)),
            _ => None,
        })
        .collect()
}

fn done_of(events: &[Event], candidate: usize) -> (Option<String>, usize, &'static str) {
    events
        .iter()
        .find_map(|ev| match ev {
            Event::CandidateDone {
                candidate: c,
                answer,
                tokens,
                reason,
                ..
            } if *c == candidate => Some((answer.clone(), *tokens, *reason)),
            _ => None,
        })
        .expect("every candidate reports done")
}

#[test]
fn the_thinking_is_closed_by_force_after_exactly_b_tokens() {
    let e = engine();
    let a = adapter(&e);
    let mut forced_runs = 0;
    for b in [1, 4, 9] {
        let o = reasoning(1, b, 3);
        let events = run(&e, Some(&a), &o);
        assert!(matches!(
            events[0],
            Event::Route {
                mode: Mode::Reason,
                p_reason: None
            }
        ));
        let (_, sampled, reason) = done_of(&events, 0);
        if reason == "eos" {
            continue; // the model closed on its own: nothing to force
        }
        let toks = tokens_of(&events, 0);
        let forced_at = toks
            .iter()
            .position(|(t, _)| t.contains("</think>"))
            .expect("the forced close is reported");
        let think = toks[..forced_at]
            .iter()
            .filter(|(_, p)| *p == Phase::Think)
            .count();
        assert!(
            think <= b,
            "B = {b}: {think} thinking token events (empty pieces are not reported)"
        );
        assert_eq!(reason, "budget", "B = {b}");
        assert_eq!(
            sampled,
            b + 3,
            "B thinking tokens + A answer tokens sampled, B = {b}"
        );
        assert!(toks[forced_at].0.contains("Final answer:"));
        assert_eq!(toks[forced_at].1, Phase::Answer);
        forced_runs += 1;
    }
    assert!(
        forced_runs >= 2,
        "the random model must run into its budget in most runs"
    );
}

#[test]
fn each_candidate_equals_a_single_run_with_its_seed() {
    let e = engine();
    let a = adapter(&e);
    let base = ReasonOptions {
        mode: Mode::Reason,
        n: 4,
        budget: Budget {
            think: 6,
            answer: 4,
        },
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 100,
        early_stop: false,
        ..Default::default()
    };
    let together = run(&e, Some(&a), &base);
    let mut distinct = std::collections::BTreeSet::new();
    for i in 0..4 {
        let alone = run(
            &e,
            Some(&a),
            &ReasonOptions {
                n: 1,
                seed: 100 + i as u64,
                ..base.clone()
            },
        );
        assert_eq!(
            tokens_of(&together, i),
            tokens_of(&alone, 0),
            "candidate {i}"
        );
        assert_eq!(done_of(&together, i), done_of(&alone, 0), "candidate {i}");
        distinct.insert(format!("{:?}", tokens_of(&together, i)));
    }
    assert!(
        distinct.len() > 1,
        "different seeds sample different candidates"
    );
}

#[test]
fn early_consensus_stops_the_rest_once_the_majority_is_decided() {
    let e = engine();
    let a = adapter(&e);
    // Greedy: eight identical candidates finish together; after five agree, three stop.
    let o = reasoning(8, 3, 2);
    let events = run(&e, Some(&a), &o);
    let (answer, _, _) = done_of(&events, 0);
    let Some(Event::Vote {
        answer: winner,
        stopped_early,
        tally,
        ..
    }) = events.iter().find(|ev| matches!(ev, Event::Vote { .. }))
    else {
        panic!("no vote")
    };
    assert!(
        answer.is_some(),
        "the forced 'Final answer:' is followed by an answer: {events:?}"
    );
    match answer {
        Some(_) => {
            assert_eq!(*stopped_early, 3, "{events:?}");
            assert_eq!(tally[0].votes, 5);
            assert!(winner.is_some());
            for j in 5..8 {
                assert_eq!(done_of(&events, j).2, "consensus");
            }
            let Some(Event::Done { stats }) = events.last() else {
                panic!("done last")
            };
            assert!(stats.tokens_saved > 0);
        }
        None => assert_eq!(*stopped_early, 0, "no answers: nothing is decided"),
    }
    let o = ReasonOptions {
        early_stop: false,
        ..o
    };
    let events = run(&e, Some(&a), &o);
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::Vote {
            stopped_early: 0,
            ..
        }
    )));
}

#[test]
fn chat_mode_is_plain_generation_from_the_same_prompt_cache() {
    let e = engine();
    let a = adapter(&e);
    let o = ReasonOptions {
        mode: Mode::Chat,
        max_tokens: 12,
        temperature: 0.0,
        ..Default::default()
    };
    let events = run(&e, Some(&a), &o);
    assert!(matches!(
        events[0],
        Event::Route {
            mode: Mode::Chat,
            ..
        }
    ));
    let text: String = tokens_of(&events, 0).into_iter().map(|(t, _)| t).collect();
    let prompt = e.tokenizer.encode("hello hell", false).unwrap();
    let mut seq = CpuSequence {
        engine: &e,
        cache: e.new_cache(prompt.len() + 13),
    };
    let g = pollster::block_on(generate(
        &e.tokenizer,
        &mut seq,
        &prompt,
        12,
        SamplerConfig::default(),
        |_| {},
    ))
    .unwrap();
    assert_eq!(
        text, g.text,
        "chat mode: LoRA off, the base model's own greedy answer"
    );
    assert!(!events
        .iter()
        .any(|ev| matches!(ev, Event::CandidateDone { candidate: 1, .. })));
}

#[test]
fn reason_mode_without_an_adapter_is_a_clear_error() {
    let e = engine();
    let prompt = e.tokenizer.encode("hi", false).unwrap();
    let o = ReasonOptions {
        mode: Mode::Reason,
        budget: Budget {
            think: 8,
            answer: 4,
        },
        ..Default::default()
    };
    let err = reason_cpu(&e, None, None, &prompt, &o, |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a reasoning adapter"), "{err}");
    let o = ReasonOptions {
        n: 17,
        max_tokens: 8,
        ..Default::default()
    };
    assert!(reason_cpu(&e, None, None, &prompt, &o, |_| Ok(()))
        .unwrap_err()
        .to_string()
        .contains("1 to 16"));
}

#[test]
fn a_budget_longer_than_the_context_is_a_context_overflow() {
    let e = engine();
    let a = adapter(&e);
    let prompt = e.tokenizer.encode("hi", false).unwrap();
    let o = ReasonOptions {
        mode: Mode::Reason,
        budget: Budget {
            think: 500,
            answer: 8,
        },
        ..Default::default()
    };
    let err = reason_cpu(&e, Some(&a), None, &prompt, &o, |_| Ok(())).unwrap_err();
    assert_eq!(err.code(), "CONTEXT_OVERFLOW", "{err}");
}

#[test]
fn candidates_share_the_prompt_cache_instead_of_copying_it() {
    let e = engine();
    let a = adapter(&e);
    let c = &e.model.config;
    let prompt = e.tokenizer.encode("hello hell hello", false).unwrap();
    let row = 2 * c.n_layer * c.kv_dim() * 4;
    let o = ReasonOptions {
        early_stop: false,
        ..reasoning(8, 6, 2)
    };
    let mut events = Vec::new();
    reason_cpu(&e, Some(&a), None, &prompt, &o, |ev| {
        events.push(ev.clone());
        Ok(())
    })
    .unwrap();
    let Some(Event::Done { stats }) = events.last() else {
        panic!("done last")
    };
    // Each candidate holds only what it fed after the prompt: the think prefix, its
    // sampled tokens but the last (never fed), and the forced suffix when forced.
    let prefix = e.tokenizer.encode(&o.think_prefix, true).unwrap().len();
    let forced = e.tokenizer.encode(&o.force_suffix, true).unwrap().len();
    let own: usize = (0..8)
        .map(|i| {
            let was_forced = tokens_of(&events, i)
                .iter()
                .any(|(t, _)| t.contains("</think>"));
            prefix + done_of(&events, i).1 - 1 + if was_forced { forced } else { 0 }
        })
        .sum();
    assert_eq!(
        stats.kv_bytes,
        (prompt.len() + own) * row,
        "P + N*T positions"
    );
    assert!(
        stats.kv_bytes < 8 * prompt.len() * row + own * row,
        "not N copies of the prompt"
    );
}

#[test]
fn an_error_from_the_event_sink_stops_the_request_at_once() {
    let e = engine();
    let a = adapter(&e);
    let prompt = e.tokenizer.encode("hello hell", false).unwrap();
    let o = ReasonOptions {
        early_stop: false,
        ..reasoning(3, 12, 4)
    };
    let full = run(&e, Some(&a), &o);
    let full_tokens = full
        .iter()
        .filter(|ev| matches!(ev, Event::Token { .. }))
        .count();
    assert!(full_tokens > 10, "{full_tokens}");
    // The sink refuses the fourth token event: nothing is emitted after it.
    let mut seen = Vec::new();
    let err = reason_cpu(&e, Some(&a), None, &prompt, &o, |ev| {
        seen.push(ev.clone());
        let tokens = seen
            .iter()
            .filter(|ev| matches!(ev, Event::Token { .. }))
            .count();
        if tokens == 4 {
            return Err(edge_reason::Error::Aborted("the caller stopped".into()));
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(err.code(), "ABORTED", "{err}");
    assert_eq!(seen.len(), 5, "route + 4 tokens, then nothing: {seen:?}");
    assert!(matches!(seen.last(), Some(Event::Token { .. })));
}

#[test]
fn a_batched_step_of_candidates_equals_each_candidate_on_its_own() {
    // The CPU decodes all candidates of a step in one pass (the weights read once);
    // each one's logits and cache must be what its own pass gives.
    use edge_reason::kv_cache::KvCache;
    use edge_reason::model::Logits;
    use std::sync::Arc;
    let e = engine();
    let a = adapter(&e);
    let c = &e.model.config;
    let prompt = e.tokenizer.encode("hello hell hello", false).unwrap();
    let mut cache = KvCache::new(c, prompt.len());
    e.model.forward(&prompt, &mut cache, Logits::None).unwrap();
    let shared = Arc::new(cache);
    // Three candidates at different lengths, fed 1, 3 and 2 tokens.
    let feeds: [&[u32]; 3] = [&[5], &[7, 8, 9], &[11, 4]];
    let history: [&[u32]; 3] = [&[], &[3, 6], &[2]];
    let fork = || {
        history
            .iter()
            .map(|h| {
                let mut own = KvCache::fork(&shared, 16).unwrap();
                if !h.is_empty() {
                    e.model
                        .forward_with(h, &mut own, Logits::None, Some(&a))
                        .unwrap();
                }
                own
            })
            .collect::<Vec<_>>()
    };
    let (mut alone, mut batched) = (fork(), fork());
    let want: Vec<Vec<f32>> = alone
        .iter_mut()
        .zip(feeds)
        .map(|(own, f)| {
            e.model
                .forward_with(f, own, Logits::Last, Some(&a))
                .unwrap()
        })
        .collect();
    let got = e
        .model
        .forward_batch(
            batched
                .iter_mut()
                .zip(feeds)
                .map(|(own, f)| (f, own))
                .collect(),
            Some(&a),
        )
        .unwrap();
    assert_eq!(got.len(), 3 * c.vocab_size);
    for (i, (w, g)) in want.iter().zip(got.chunks(c.vocab_size)).enumerate() {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = w.iter().zip(g).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "candidate {i}: max diff {diff}"
        );
    }
    for (x, y) in alone.iter().zip(&batched) {
        assert_eq!(x.len(), y.len());
    }
    // The next step after the batched one still matches (the caches were written right).
    let next = |caches: &mut Vec<KvCache>| -> Vec<f32> {
        e.model
            .forward_batch(
                caches.iter_mut().map(|own| (&[12u32][..], own)).collect(),
                None,
            )
            .unwrap()
    };
    let (x, y) = (next(&mut alone), next(&mut batched));
    let diff = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff <= 1e-4, "after a batched step: {diff}");
    // A sequence without tokens is refused.
    let err = e
        .model
        .forward_batch(vec![(&[][..], &mut alone[0])], None)
        .unwrap_err();
    assert!(err.to_string().contains("at least one token"), "{err}");
}

#[test]
fn a_prompt_of_several_parts_reports_its_progress_and_stops_between_parts() {
    let mut model = tiny_llama();
    model.meta("llama.context_length", common::Meta::U32(512));
    let e = Engine::from_bytes(&model.bytes()).unwrap();
    let mut prompt = Vec::new();
    while prompt.len() < 200 {
        prompt.extend(e.tokenizer.encode("hello hell ", false).unwrap());
    }
    prompt.truncate(200);
    let o = ReasonOptions {
        mode: Mode::Chat,
        max_tokens: 2,
        ..Default::default()
    };
    let mut events = Vec::new();
    reason_cpu(&e, None, None, &prompt, &o, |ev| {
        events.push(ev.clone());
        Ok(())
    })
    .unwrap();
    let progress: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Prefill { tokens, total } => Some((*tokens, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress, [(128, 200), (200, 200)]);
    assert!(matches!(events[2], Event::Route { .. }), "{events:?}");

    // An error from the callback at the first part stops the request there.
    let mut seen = Vec::new();
    let err = reason_cpu(&e, None, None, &prompt, &o, |ev| {
        seen.push(ev.clone());
        Err(edge_reason::Error::Aborted("stop".into()))
    })
    .unwrap_err();
    assert_eq!(err.code(), "ABORTED");
    assert!(
        matches!(seen[..], [Event::Prefill { tokens: 128, .. }]),
        "{seen:?}"
    );

    // A prompt of one part sends no progress.
    let short = &prompt[..100];
    let mut first = None;
    reason_cpu(&e, None, None, short, &o, |ev| {
        first.get_or_insert(ev.clone());
        Ok(())
    })
    .unwrap();
    assert!(matches!(first, Some(Event::Route { .. })), "{first:?}");
}
