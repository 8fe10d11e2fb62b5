//! The reasoning runtime on the GPU backend, against the CPU backend (whose LoRA
//! forward is itself checked against merged dense weights in tests/it/lora.rs), on a tiny
//! model with a random adapter and switcher made here: LoRA kernels with per-row on/off,
//! the switcher's pooled features, picked tokens' log-probabilities, and whole requests
//! (candidates batched in one step equal to single runs, the same events as the CPU).
//! Explicit tolerances; runs on lavapipe in CI.

use crate::common;

use common::{gpu_or_skip as gpu, random_peft_adapter, tiny_llama};
use edge_reason::engine::Engine;
use edge_reason::gguf::Gguf;
use edge_reason::gpu::{GpuAdapter, GpuModel, GpuSession, KvPrecision, PassOptions, Row};
use edge_reason::kv_cache::KvCache;
use edge_reason::lora::Adapter;
use edge_reason::model::{BytesSource, Logits};
use edge_reason::reason::{
    Budget, Decoder, Event, Feed, Heads, Mode, ReasonOptions, Switcher, Verifier,
};
use edge_reason::runner::{LoadedAdapter, Runner};

use edge_reason::sampler::Draw;

/// The tiny model on the GPU (with an f32 KV cache) and on the CPU.
fn both() -> Option<(GpuModel, Engine)> {
    let ctx = gpu()?;
    let bytes = tiny_llama().bytes();
    let gguf = Gguf::parse(&bytes).unwrap();
    let mut gm = GpuModel::load_blocking(ctx, &gguf, &mut BytesSource(&bytes)).unwrap();
    // Exact keys and values, as the CPU keeps them.
    gm.set_kv_precision(KvPrecision::F32);
    Some((gm, Engine::from_bytes(&bytes).unwrap()))
}

fn adapter(e: &Engine, rank: usize) -> Adapter {
    let (json, st) = random_peft_adapter(&e.model.config, rank, 5);
    Adapter::from_peft(&json, &st, &e.model.config).unwrap()
}

/// [`adapter`] in our INT8 form, as `edge-reason export-adapter` writes it.
fn int8_adapter(e: &Engine, rank: usize) -> Adapter {
    let (json, st) = random_peft_adapter(&e.model.config, rank, 5);
    let int8 = edge_reason::lora::int8_peft(&st).unwrap();
    Adapter::from_peft(&json, &int8, &e.model.config).unwrap()
}

/// Main-sequence rows from position `pos0`, with the adapter flag `lora`.
fn main_rows(tokens: &[u32], pos0: usize, lora: bool) -> Vec<Row> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| Row {
            lora: lora as u32,
            ..Row::main(t, (pos0 + i) as u32)
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn logits(gm: &GpuModel, s: &GpuSession) -> Vec<f32> {
    pollster::block_on(gm.read_logits(s)).unwrap()
}

#[test]
fn gpu_lora_forward_equals_the_cpu_lora_forward_at_every_position() {
    let Some((gm, cpu)) = both() else { return };
    let c = &cpu.model.config;
    let tokens = [1u32, 17, 42, 99, 256, 7, 130, 5];
    // f32 and INT8 (rank 6: B's rows padded to whole words on the device).
    for (rank, int8) in [(4, false), (16, false), (6, true), (16, true)] {
        let a = if int8 {
            int8_adapter(&cpu, rank)
        } else {
            adapter(&cpu, rank)
        };
        let ga = GpuAdapter::upload(&gm.ctx, &a, c).unwrap();
        let mut cache = KvCache::new(c, 16);
        let want = cpu
            .model
            .forward_with(&tokens, &mut cache, Logits::All, Some(&a))
            .unwrap();
        let mut base = KvCache::new(c, 16);
        let without = cpu.model.forward(&tokens, &mut base, Logits::All).unwrap();
        let mut s = gm.session(16).unwrap();
        let o = PassOptions {
            want: Logits::All,
            adapter: Some(&ga),
            ..Default::default()
        };
        gm.run_pass(&mut s, &main_rows(&tokens, 0, true), o)
            .unwrap();
        let got = logits(&gm, &s);
        let moved = max_diff(&want, &without);
        let diff = max_diff(&got, &want);
        assert!(
            diff < 1e-3 && moved > 100.0 * diff,
            "rank {rank}, int8 {int8}: GPU vs CPU LoRA logits differ by {diff} (the adapter moves them by {moved})"
        );
    }
}

#[test]
fn rows_without_the_flag_ignore_the_adapter_in_the_same_pass() {
    let Some((gm, cpu)) = both() else { return };
    let c = &cpu.model.config;
    let a = adapter(&cpu, 8);
    let ga = GpuAdapter::upload(&gm.ctx, &a, c).unwrap();
    let prompt = [3u32, 44, 91, 200, 12];
    // CPU: the prompt without LoRA, then one token per candidate with or without it.
    let mut shared = KvCache::new(c, 8);
    cpu.model
        .forward(&prompt, &mut shared, Logits::None)
        .unwrap();
    let shared = std::sync::Arc::new(shared);
    let next = [10u32, 20, 30, 40];
    let on = [true, false, true, false];
    let want: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            let mut own = KvCache::fork(&shared, 8).unwrap();
            let lora = on[i].then_some(&a);
            cpu.model
                .forward_with(&next[i..=i], &mut own, Logits::Last, lora)
                .unwrap()
        })
        .collect();
    // GPU: the prompt once, four streams in one pass, two of them with the flag.
    let mut s = GpuSession::new(&gm, 8, 4, 4).unwrap();
    gm.append(&mut s, &prompt, Logits::None, &[]).unwrap();
    s.fork(4).unwrap();
    let mut rows = Vec::new();
    for i in 0..4 {
        rows.extend(s.feed_rows(&[(i, &next[i..=i])], on[i]).unwrap());
    }
    let o = PassOptions {
        want: Logits::All,
        adapter: Some(&ga),
        ..Default::default()
    };
    gm.run_pass(&mut s, &rows, o).unwrap();
    let got = logits(&gm, &s);
    for (i, w) in want.iter().enumerate() {
        let diff = max_diff(&got[i * c.vocab_size..(i + 1) * c.vocab_size], w);
        assert!(
            diff < 1e-3,
            "stream {i} (LoRA {}): differs by {diff}",
            on[i]
        );
    }
    assert!(max_diff(&want[0], &want[1]) > 0.1, "streams must differ");
}

#[test]
fn several_tokens_of_one_stream_in_one_pass_equal_one_per_pass() {
    let Some((gm, cpu)) = both() else { return };
    let c = &cpu.model.config;
    let a = adapter(&cpu, 4);
    let ga = GpuAdapter::upload(&gm.ctx, &a, c).unwrap();
    let prompt = [3u32, 44, 91];
    let feed = [7u32, 8, 9, 10];
    let run = |chunks: &[&[u32]]| {
        let mut s = GpuSession::new(&gm, 8, 2, 8).unwrap();
        gm.append(&mut s, &prompt, Logits::None, &[]).unwrap();
        s.fork(2).unwrap();
        for chunk in chunks {
            let rows = s.feed_rows(&[(1, chunk)], true).unwrap();
            let o = PassOptions {
                want: Logits::All,
                adapter: Some(&ga),
                ..Default::default()
            };
            gm.run_pass(&mut s, &rows, o).unwrap();
        }
        assert_eq!(s.stream_len(1), feed.len());
        assert_eq!(s.stream_len(0), 0);
        let l = logits(&gm, &s);
        l[l.len() - c.vocab_size..].to_vec()
    };
    let whole = run(&[&feed]);
    let one_by_one = run(&[&feed[..1], &feed[1..2], &feed[2..3], &feed[3..]]);
    let diff = max_diff(&whole, &one_by_one);
    assert!(diff < 1e-4, "differs by {diff}");
}

#[test]
fn pooled_features_equal_the_cpu_sum_of_final_hidden_states() {
    let Some((gm, cpu)) = both() else { return };
    let c = &cpu.model.config;
    let prompt: Vec<u32> = (0..70).map(|i| (i * 37 % 290) as u32).collect();
    let mut cache = KvCache::new(c, 80);
    let (_, want) = cpu
        .model
        .forward_pooled(&prompt, &mut cache, Logits::Last)
        .unwrap();
    let mut s = gm.session(80).unwrap();
    gm.clear_pooled(&s);
    // Two passes (64 + 6 rows), the last with the head too.
    for (i, chunk) in prompt.chunks(64).enumerate() {
        let rows = s.main_rows(chunk).unwrap();
        let o = PassOptions {
            want: if i == 0 { Logits::None } else { Logits::Last },
            pool: true,
            ..Default::default()
        };
        gm.run_pass(&mut s, &rows, o).unwrap();
    }
    let got = pollster::block_on(gm.read_pooled(&s)).unwrap();
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let diff = max_diff(&got, &want);
    assert!(
        diff < 1e-4 * scale.max(1.0),
        "differs by {diff} (scale {scale})"
    );
    // A pass without pooling leaves the features alone; clearing zeroes them.
    let rows = s.main_rows(&[5]).unwrap();
    gm.forward(&mut s, &rows, Logits::Last).unwrap();
    assert_eq!(pollster::block_on(gm.read_pooled(&s)).unwrap(), got);
    gm.clear_pooled(&s);
    assert!(pollster::block_on(gm.read_pooled(&s))
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn picked_tokens_come_with_their_log_probability() {
    let Some((gm, _cpu)) = both() else { return };
    let mut s = gm.session(16).unwrap();
    let draws = [
        Draw::GREEDY,
        Draw {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            u: 0.7,
        },
        Draw {
            temperature: 1.5,
            top_k: 64,
            top_p: 1.0,
            u: 0.05,
        },
    ];
    let rows = s.main_rows(&[9, 80, 150]).unwrap();
    gm.forward_with(&mut s, &rows, Logits::All, &draws, None)
        .unwrap();
    let (ids, lps) = pollster::block_on(gm.read_picks(&s)).unwrap();
    let l = logits(&gm, &s);
    let v = l.len() / 3;
    for r in 0..3 {
        let row = &l[r * v..(r + 1) * v];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
        let want = row[ids[r] as usize] - lse;
        assert!(
            (lps[r] - want).abs() < 1e-4,
            "row {r}: {} vs {want}",
            lps[r]
        );
    }
    // Picking again from the same logits with other draws.
    gm.pick_again(&mut s, &[Draw::GREEDY; 3]).unwrap();
    let (again, _) = pollster::block_on(gm.read_picks(&s)).unwrap();
    for r in 0..3 {
        let row = &l[r * v..(r + 1) * v];
        assert_eq!(again[r], edge_reason::sampler::argmax(row), "row {r}");
    }
}

#[test]
fn an_adapter_above_the_gpu_rank_is_a_clear_error() {
    let Some((gm, cpu)) = both() else { return };
    let a = adapter(&cpu, 72);
    let e = GpuAdapter::upload(&gm.ctx, &a, &cpu.model.config)
        .err()
        .expect("rank 72 must be refused");
    let msg = e.to_string();
    assert!(msg.contains("rank 72") && msg.contains("CPU"), "{msg}");
    assert_eq!(e.code(), "INVALID_ADAPTER");
}

/// The tiny model as a GPU runner (f32 KV cache) and as a CPU runner.
fn runners() -> Option<(Runner, Runner)> {
    let ctx = gpu()?;
    let bytes = tiny_llama().bytes();
    let gguf = Gguf::parse(&bytes).unwrap();
    let mut g =
        pollster::block_on(Runner::load(&gguf, &mut BytesSource(&bytes), Some(ctx))).unwrap();
    g.set_kv_precision(KvPrecision::F32);
    let c = pollster::block_on(Runner::load(&gguf, &mut BytesSource(&bytes), None)).unwrap();
    Some((g, c))
}

fn runner_adapter(r: &Runner) -> LoadedAdapter {
    let (json, st) = random_peft_adapter(r.config(), 4, 9);
    r.load_adapter(Adapter::from_peft(&json, &st, r.config()).unwrap())
        .unwrap()
}

/// A random switcher (hidden 8) for width `d`, pooling chunks of `chunk` tokens.
fn switcher(d: usize, chunk: usize) -> Switcher {
    use safetensors::{tensor::TensorView, Dtype};
    let h = 8;
    let mut state = 7u64;
    let mut rand = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5).to_le_bytes()
            })
            .collect()
    };
    let tensors = [
        ("w1", vec![h, d], rand(h * d)),
        ("b1", vec![h], rand(h)),
        ("w2", vec![1, h], rand(h)),
        ("b2", vec![1], rand(1)),
    ];
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let st = safetensors::serialize(views, None).unwrap();
    let json = format!(
        r#"{{"hidden": {h}, "threshold": 0.5, "pooling": "mean", "ema_alpha": 0.6, "chunk": {chunk}}}"#
    );
    Switcher::from_files(&json, &st, d).unwrap()
}

fn request(
    r: &Runner,
    a: Option<&LoadedAdapter>,
    sw: Option<&Switcher>,
    o: &ReasonOptions,
) -> Vec<Event> {
    let prompt = r.tokenizer().encode("hello hell, hello", false).unwrap();
    let mut events = Vec::new();
    let heads = Heads {
        switcher: sw,
        verifier: None,
    };
    pollster::block_on(r.reason(a, heads, &prompt, o, |e| {
        events.push(e.clone());
        Ok(())
    }))
    .unwrap();
    events
}

/// Each candidate's text and how it ended.
fn outcomes(events: &[Event], n: usize) -> Vec<(String, &'static str, usize)> {
    (0..n)
        .map(|i| {
            let text: String = events
                .iter()
                .filter_map(|e| match e {
                    Event::Token {
                        candidate, text, ..
                    } if *candidate == i => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let (reason, tokens) = events
                .iter()
                .find_map(|e| match e {
                    Event::CandidateDone {
                        candidate,
                        reason,
                        tokens,
                        ..
                    } if *candidate == i => Some((*reason, *tokens)),
                    _ => None,
                })
                .expect("every candidate reports done");
            (text, reason, tokens)
        })
        .collect()
}

fn sampled(n: usize, seed: u64) -> ReasonOptions {
    ReasonOptions {
        mode: Mode::Reason,
        n,
        budget: Budget {
            think: 10,
            answer: 5,
        },
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        seed,
        early_stop: false,
        ..Default::default()
    }
}

#[test]
fn batched_gpu_candidates_equal_single_runs_with_their_seeds() {
    let Some((g, _)) = runners() else { return };
    let a = runner_adapter(&g);
    let together = outcomes(&request(&g, Some(&a), None, &sampled(4, 50)), 4);
    let mut distinct = std::collections::BTreeSet::new();
    for (i, t) in together.iter().enumerate() {
        let alone = outcomes(&request(&g, Some(&a), None, &sampled(1, 50 + i as u64)), 1);
        assert_eq!(&alone[0], t, "candidate {i}");
        distinct.insert(t.0.clone());
    }
    assert!(
        distinct.len() >= 2,
        "the seeds must give different candidates"
    );
}

#[test]
fn a_gpu_request_emits_what_the_cpu_request_emits() {
    let Some((g, c)) = runners() else { return };
    let (ga, ca) = (runner_adapter(&g), runner_adapter(&c));
    let sw = switcher(g.config().n_embd, 3);
    for (mode, n) in [(Mode::Reason, 3), (Mode::Chat, 1), (Mode::Auto, 3)] {
        let o = ReasonOptions {
            mode,
            max_tokens: 12,
            ..sampled(n, 7)
        };
        let (ge, ce) = (
            request(&g, Some(&ga), Some(&sw), &o),
            request(&c, Some(&ca), Some(&sw), &o),
        );
        // The prompt's progress (parts of the switcher's 3-token chunks) comes first.
        let progress = |events: &[Event]| {
            let n = events
                .iter()
                .take_while(|e| matches!(e, Event::Prefill { .. }))
                .count();
            (n, events[n..].to_vec())
        };
        let ((gn, ge), (cn, ce)) = (progress(&ge), progress(&ce));
        assert_eq!(gn, cn, "{mode:?}");
        assert!(gn > 1, "{mode:?}: {gn} progress events");
        let (
            Event::Route {
                mode: gm,
                p_reason: gp,
            },
            Event::Route {
                mode: cm,
                p_reason: cp,
            },
        ) = (&ge[0], &ce[0])
        else {
            panic!("the route comes first");
        };
        assert_eq!(gm, cm, "{mode:?}");
        // The switcher's probability is reported in every mode.
        let (gp, cp) = (gp.unwrap(), cp.unwrap());
        assert!((gp - cp).abs() < 1e-4, "pReason {gp} vs {cp}");
        let k = if *gm == Mode::Reason { n } else { 1 };
        assert_eq!(outcomes(&ge, k), outcomes(&ce, k), "{mode:?}");
    }
}

#[test]
fn gpu_kv_bytes_count_the_prompt_once_and_each_candidate_own_positions() {
    let Some((mut g, c)) = runners() else { return };
    let (ga, ca) = (runner_adapter(&g), runner_adapter(&c));
    let tk = g.tokenizer();
    let prompt = tk.encode("hello hell, hello", false).unwrap();
    let o = sampled(4, 3);
    let kv_of = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::Done { stats } => Some(stats.kv_bytes),
                _ => None,
            })
            .unwrap()
    };
    // A candidate that ran into its budget fed the think prefix, its sampled tokens but
    // the last, and the forced suffix.
    let prefix = tk.encode(&o.think_prefix, true).unwrap().len();
    let forced = tk.encode(&o.force_suffix, true).unwrap().len();
    let positions = |events: &[Event]| -> usize {
        let own: usize = outcomes(events, 4)
            .iter()
            .map(|(_, reason, sampled)| {
                assert_eq!(*reason, "budget", "the random model runs into its budget");
                prefix + sampled - 1 + forced
            })
            .sum();
        prompt.len() + own
    };
    let cfg = g.config().clone();
    let events = request(&g, Some(&ga), None, &o);
    let f32_row = cfg.n_layer * 2 * cfg.kv_dim() * 4; // f32 keys and values
    assert_eq!(kv_of(&events), positions(&events) * f32_row);
    assert_eq!(kv_of(&events), kv_of(&request(&c, Some(&ca), None, &o)));

    // INT8: one byte per value plus a scale per KV head.
    g.set_kv_precision(KvPrecision::Int8);
    let ga = runner_adapter(&g);
    let events = request(&g, Some(&ga), None, &o);
    let int8_row = cfg.n_layer * 2 * (cfg.kv_dim() + 4 * cfg.n_kv_head);
    assert_eq!(kv_of(&events), positions(&events) * int8_row);
}

/// A random verifier for width `d` with `suffix`.
fn verifier(d: usize) -> Verifier {
    use safetensors::{tensor::TensorView, Dtype};
    let w: Vec<u8> = (0..d)
        .flat_map(|i| (((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.3).to_le_bytes())
        .collect();
    let b = 0.1f32.to_le_bytes();
    let views = vec![
        ("w", TensorView::new(Dtype::F32, vec![1, d], &w).unwrap()),
        ("b", TensorView::new(Dtype::F32, vec![1], &b).unwrap()),
    ];
    let st = safetensors::serialize(views, None).unwrap();
    Verifier::from_files(r#"{"suffix": "\nhell?"}"#, &st, d).unwrap()
}

/// The last hidden state a decoder reads for the verifier after one step of a
/// candidate (the think prefix fed) and three more tokens.
fn hidden_after_a_step<D: Decoder>(d: &mut D, prompt: &[u32], prefix: &[u32]) -> Vec<f32> {
    d.reserve(prompt.len(), 2, 16).unwrap();
    pollster::block_on(d.prefill(prompt, false, false)).unwrap();
    d.fork(2).unwrap();
    let mut samplers: Vec<_> = (0..2)
        .map(|_| edge_reason::sampler::Sampler::new(Default::default()).unwrap())
        .collect();
    let [s0, s1] = &mut samplers[..] else {
        unreachable!()
    };
    let mut feeds = vec![
        Feed {
            candidate: 0,
            tokens: prefix,
            sampler: s0,
        },
        Feed {
            candidate: 1,
            tokens: prefix,
            sampler: s1,
        },
    ];
    let picks = pollster::block_on(d.step(&mut feeds, true)).unwrap();
    pollster::block_on(d.last_hidden(1, &[picks[1].token, 40, 41], true)).unwrap()
}

#[test]
fn the_verifier_reads_the_last_hidden_state_a_fresh_run_computes() {
    let Some((g, c)) = runners() else { return };
    let (ga, ca) = (runner_adapter(&g), runner_adapter(&c));
    let LoadedAdapter::Cpu(cpu_adapter) = &ca else {
        unreachable!()
    };
    let tk = c.tokenizer();
    let prompt = tk.encode("hello hell", false).unwrap();
    let prefix = tk.encode("<think>\n", true).unwrap();
    let on_cpu = hidden_after_a_step(&mut c.decoder(Some(&ca)).unwrap(), &prompt, &prefix);
    let on_gpu = hidden_after_a_step(&mut g.decoder(Some(&ga)).unwrap(), &prompt, &prefix);
    assert!(
        max_diff(&on_cpu, &on_gpu) < 1e-4,
        "GPU vs CPU: {}",
        max_diff(&on_cpu, &on_gpu)
    );

    // A fresh run: the prompt without LoRA, then the candidate's tokens with it.
    let Runner::Cpu(e) = &c else { unreachable!() };
    let a = Some(&**cpu_adapter);
    let mut cache = KvCache::new(c.config(), 32);
    e.model.forward(&prompt, &mut cache, Logits::None).unwrap();
    let logits = e
        .model
        .forward_with(&prefix, &mut cache, Logits::Last, a)
        .unwrap();
    let pick = edge_reason::sampler::argmax(&logits);
    e.model
        .forward_with(&[pick, 40], &mut cache, Logits::None, a)
        .unwrap();
    let (_, fresh) = e
        .model
        .forward_pooled_with(&[41], &mut cache, Logits::None, a)
        .unwrap();
    assert!(
        max_diff(&on_cpu, &fresh) < 1e-5,
        "{}",
        max_diff(&on_cpu, &fresh)
    );
}

#[test]
fn with_a_verifier_the_weighted_vote_weighs_by_its_scores_on_both_backends() {
    let Some((g, c)) = runners() else { return };
    let (ga, ca) = (runner_adapter(&g), runner_adapter(&c));
    let v = verifier(g.config().n_embd);
    let o = ReasonOptions {
        weighted: true,
        ..sampled(3, 21)
    };
    let run = |r: &Runner, a: &LoadedAdapter| {
        let prompt = r.tokenizer().encode("hello hell, hello", false).unwrap();
        let mut events = Vec::new();
        let heads = Heads {
            switcher: None,
            verifier: Some(&v),
        };
        pollster::block_on(r.reason(Some(a), heads, &prompt, &o, |e| {
            events.push(e.clone());
            Ok(())
        }))
        .unwrap();
        events
    };
    let weights = |events: &[Event]| -> Vec<f64> {
        events
            .iter()
            .find_map(|e| match e {
                Event::Vote { weights, .. } => Some(weights.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (ge, ce) = (run(&g, &ga), run(&c, &ca));
    assert_eq!(outcomes(&ge, 3), outcomes(&ce, 3));
    let (gw, cw) = (weights(&ge), weights(&ce));
    let answered = ce
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::CandidateDone {
                    answer: Some(_),
                    ..
                }
            )
        })
        .count();
    assert!(
        answered >= 1,
        "the random model must answer something: {ce:?}"
    );
    for (i, (a, b)) in gw.iter().zip(&cw).enumerate() {
        assert!((a - b).abs() < 1e-4, "candidate {i}: {a} vs {b}");
    }
    // Each answered candidate's weight is the verifier's score, not exp(mean logprob).
    for e in &ce {
        if let Event::CandidateDone {
            candidate,
            answer: Some(_),
            logprob,
            ..
        } = e
        {
            let w = cw[*candidate];
            assert!(w > 0.0 && w < 1.0, "a probability: {w}");
            assert!(
                (w - (*logprob as f64).exp()).abs() > 1e-6,
                "candidate {candidate}: weighed by its log-probability"
            );
        }
    }
}
