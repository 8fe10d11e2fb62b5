//! Seeded mutation fuzzing of everything that reads untrusted bytes or text: GGUF files
//! (header, tokenizer, model config, then a forward pass), chat templates, tokenizer
//! input, PEFT and INT8 adapters, the switcher and verifier heads, and budget hints.
//!
//! Each target starts from valid inputs and mutates them: bytes (bit flips, interesting
//! integers written over a field, runs cut, repeated or removed, the input truncated),
//! template syntax spliced in, and JSON values replaced by hostile ones (huge, negative,
//! fractional, empty, long). Every input must give `Ok` or a coded error: a panic fails
//! the test, and the input that caused it is written to `target/fuzz-failures/` so it
//! can be kept in `tests/fixtures/fuzz/<target>/`, whose files run first on every run.
//!
//! The rounds are fixed and seeded, so a run is repeatable; `EDGE_REASON_FUZZ_ROUNDS=K`
//! multiplies them (and `EDGE_REASON_FUZZ_SEED` changes the seed) for longer hunts.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::seq::IndexedRandom;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::path::PathBuf;

use crate::alloc_watch::largest_during;
use crate::common::{fixture, random_peft_adapter, tiny_llama, Meta};
use edge_reason::engine::Engine;
use edge_reason::lora::{int8_peft, Adapter};
use edge_reason::reason::{BudgetHint, Switcher, Verifier};
use edge_reason::tokenizer::{render_chat_template, Message, CHATML_TEMPLATE};

/// The largest single allocation an input of `len` bytes may cause: what the engine
/// builds from a file is a small multiple of it (f32 copies of f16 or quantized weights,
/// templates' output of its messages plus 1 MiB), plus working buffers.
fn allocation_bound(len: usize) -> usize {
    (16 << 20) + 8 * len
}

/// Integers that sit on the edges parsers get wrong: zero, one, sign bits, 2^32, the
/// top of each width, and sizes just past a small file.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    u64::MAX - 4,
    1 << 40,
];

/// One to four byte mutations of `input`, each at a position in `region` (clamped to
/// the input).
fn mutate_bytes(rng: &mut SmallRng, input: &[u8], region: std::ops::Range<usize>) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.random_range(0..4) {
        let end = region.end.min(b.len());
        if end <= region.start {
            break;
        }
        let at = region.start + rng.random_range(0..end - region.start);
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = *[0u8, 1, 0x7f, 0x80, 0xff].choose(rng).unwrap(),
            2 | 3 => {
                // An interesting integer over a 4- or 8-byte field.
                let bytes = INTERESTING.choose(rng).unwrap().to_le_bytes();
                let width = if rng.random_range(0..2) == 0 { 4 } else { 8 };
                for (i, &x) in bytes[..width].iter().enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = x;
                    }
                }
            }
            4 => {
                let n = (1 + rng.random_range(0..16)).min(b.len() - at);
                b.drain(at..at + n);
            }
            5 => {
                let n = (1 + rng.random_range(0..16)).min(b.len() - at);
                let run = b[at..at + n].to_vec();
                b.splice(at..at, run);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// Runs `target` on the kept regression inputs of `name`, then on `rounds` mutations
/// made by `make` from the round's random stream; a panic fails the test naming the
/// input, written out for keeping. `target` says whether it accepted the input; so that
/// the mutations are known to reach past the first checks and to be refused by them,
/// both must happen in at least 1% of the rounds.
fn fuzz(
    name: &str,
    rounds: usize,
    mut make: impl FnMut(&mut SmallRng) -> Vec<u8>,
    target: impl Fn(&[u8]) -> bool,
) {
    let kept_dir = fixture("fuzz").join(name);
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&kept_dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    kept.sort();
    for path in kept {
        let input = std::fs::read(&path).unwrap();
        let (r, allocated) = largest_during(|| catch_unwind(AssertUnwindSafe(|| target(&input))));
        assert!(
            r.is_ok(),
            "{name}: the kept input {} panicked",
            path.display()
        );
        assert!(
            allocated <= allocation_bound(input.len()),
            "{name}: the kept input {} allocated {allocated} bytes at once",
            path.display()
        );
    }
    let scale: usize = std::env::var("EDGE_REASON_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("EDGE_REASON_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng =
        SmallRng::seed_from_u64(seed ^ name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ b as u64));
    let total = rounds * scale;
    let mut accepted = 0;
    let mut largest = 0;
    for round in 0..total {
        let input = make(&mut rng);
        let (outcome, allocated) =
            largest_during(|| catch_unwind(AssertUnwindSafe(|| target(&input))));
        accepted += matches!(outcome, Ok(true)) as usize;
        largest = largest.max(allocated);
        if outcome.is_err() || allocated > allocation_bound(input.len()) {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{round}.bin"));
            std::fs::write(&path, &input).unwrap();
            let what = match outcome {
                Err(_) => "panicked".to_string(),
                Ok(_) => format!("allocated {allocated} bytes at once"),
            };
            panic!(
                "{name}: round {round} {what} on {} (fix it, then keep the input in {})",
                path.display(),
                kept_dir.display()
            );
        }
    }
    let refused = total - accepted;
    eprintln!("{name}: {total} inputs, {accepted} accepted, {refused} refused; largest allocation {largest} bytes");
    assert!(
        accepted * 100 >= total && refused * 100 >= total,
        "{name}: {accepted} of {total} inputs accepted, {refused} refused: the mutations do not reach both sides"
    );
}

/// Text with template syntax and hostile values spliced in, for templates and JSON.
const SPLICES: [&str; 28] = [
    "{%",
    "%}",
    "{{",
    "}}",
    "{#",
    "#}",
    "for x in range(99999999)",
    "endfor",
    "loop.index",
    "namespace(",
    "recursive",
    "macro m()",
    "endmacro",
    "m()",
    "caller()",
    "~",
    "*",
    "|",
    "'",
    "\"",
    "(",
    ")",
    "[",
    "]",
    "-1",
    "1e309",
    "\\u0000",
    "<|im_end|>",
];

/// Mutates text: byte mutations, or a splice of template or JSON syntax.
fn mutate_text(rng: &mut SmallRng, text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for _ in 0..1 + rng.random_range(0..3) {
        if rng.random_range(0..2) == 0 {
            let at = rng.random_range(0..b.len() + 1);
            let piece = SPLICES.choose(rng).unwrap().as_bytes().to_vec();
            b.splice(at..at, piece);
        } else {
            let len = b.len();
            b = mutate_bytes(rng, &b, 0..len);
        }
    }
    b
}

/// Values a hostile config holds where a number, string or list is expected.
fn hostile_value(rng: &mut SmallRng) -> serde_json::Value {
    use serde_json::json;
    match rng.random_range(0..14) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1.5),
        3 => json!(1e308),
        4 => json!(-1e308),
        5 => json!(4294967296u64),
        6 => json!(u64::MAX),
        7 => json!(""),
        8 => json!("x".repeat(1 << 16)),
        9 => json!([]),
        10 => json!({}),
        11 => json!(null),
        12 => json!(vec![1_000_000_000u64; 100]),
        _ => json!(true),
    }
}

/// A JSON text with one to three values (leaves or whole members) replaced by hostile
/// ones, members removed or added; or, one time in four, byte-mutated text.
fn mutate_json(rng: &mut SmallRng, text: &str) -> Vec<u8> {
    if rng.random_range(0..4) == 0 {
        return mutate_text(rng, text);
    }
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    for _ in 0..1 + rng.random_range(0..3) {
        mutate_value(rng, &mut v);
    }
    v.to_string().into_bytes()
}

/// Walks down to a random member or item of `v` (sometimes stopping early) and
/// replaces it with a hostile value, or removes it from its object.
fn mutate_value(rng: &mut SmallRng, v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) if !m.is_empty() && rng.random_range(0..3) != 0 => {
            let key = m.keys().nth(rng.random_range(0..m.len())).unwrap().clone();
            match rng.random_range(0..8) {
                0 => drop(m.remove(&key)),
                _ => mutate_value(rng, m.get_mut(&key).unwrap()),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.random_range(0..3) != 0 => {
            let i = rng.random_range(0..a.len());
            mutate_value(rng, &mut a[i]);
        }
        _ => *v = hostile_value(rng),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The tiny model with a chat template, for the GGUF target's seeds.
fn tiny_model_bytes() -> Vec<u8> {
    let mut w = tiny_llama();
    w.meta("tokenizer.chat_template", Meta::Str(CHATML_TEMPLATE.into()));
    w.bytes()
}

#[test]
fn gguf_files_load_or_fail_with_a_code() {
    let model = tiny_model_bytes();
    let header_end = edge_reason::gguf::Gguf::parse(&model).unwrap().data_offset as usize;
    let len = model.len();
    fuzz(
        "gguf",
        1500,
        // Mostly the header (metadata, tensor table); now and then anywhere.
        |rng| match rng.random_range(0..8) {
            0 => mutate_bytes(rng, &model, 0..len),
            _ => mutate_bytes(rng, &model, 0..header_end),
        },
        |file| {
            let Ok(engine) = Engine::from_bytes(file) else {
                return false;
            };
            // A file that still loads must run or fail cleanly.
            let mut cache = engine.new_cache(16);
            let ids = engine
                .tokenizer
                .encode("hello hell", false)
                .unwrap_or_default();
            let _ = engine.prefill(&ids, &mut cache);
            let _ = engine
                .tokenizer
                .encode_chat(&[Message::new("user", "hi")], true);
            true
        },
    );
}

/// Chat templates in the shapes models ship (ChatML, Llama 3, Gemma, a Qwen-style one
/// with tools and a namespace), the seeds of the template target.
const TEMPLATES: [&str; 4] = [
    CHATML_TEMPLATE,
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}{%- if ns.multi_step_tool and message.role == 'user' %}{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content.split('</think>')[-1].lstrip('\n') + '<|im_end|>\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}",
];

#[test]
fn chat_templates_render_or_fail_with_a_code() {
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "<think>2+2=4</think>4"),
        Message::new("user", "And 3+3?"),
    ];
    fuzz(
        "chat_template",
        4000,
        |rng| {
            let template = *TEMPLATES.choose(rng).unwrap();
            mutate_text(rng, template)
        },
        |template| render_chat_template(&text(template), &messages, true, "<s>", "</s>").is_ok(),
    );
}

#[test]
fn tokenizer_input_encodes_and_decodes_or_fails_with_a_code() {
    let engine = Engine::from_bytes(&tiny_model_bytes()).unwrap();
    let tk = &engine.tokenizer;
    let seeds = [
        "hello hell, hello",
        "<|im_start|>user\nhi<|im_end|>",
        "caf\u{e9} \u{1F600} \t\n\r 123 456",
    ];
    fuzz(
        "tokenizer",
        3000,
        |rng| {
            let seed = *seeds.choose(rng).unwrap();
            mutate_text(rng, seed)
        },
        |input| {
            let t = text(input);
            let [plain, parsed] = [false, true].map(|special| {
                let ids = tk.encode(&t, special).ok();
                if let Some(ids) = &ids {
                    let _ = tk.decode(ids);
                }
                ids
            });
            let _ = tk.encode_chat(&[Message::new("user", &t)], true);
            let _ = tk.encode_user_prompt(&t, true);
            // Raw bytes as ids, beyond the vocabulary too.
            let ids: Vec<u32> = input
                .chunks(4)
                .map(|c| c.iter().fold(0u32, |a, &b| a << 8 | b as u32))
                .collect();
            let _ = tk.decode(&ids);
            // Counted as accepted: text in which control tokens were parsed.
            plain != parsed
        },
    );
}

/// An input of two parts (a config text and a weights file) as one byte string: the
/// text's length in 4 bytes, the text, the weights.
fn pack(config: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut b = (config.len() as u32).to_le_bytes().to_vec();
    b.extend(config);
    b.extend(weights);
    b
}

fn unpack(input: &[u8]) -> (String, &[u8]) {
    let n = input
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let rest = input.get(4..).unwrap_or_default();
    let n = n.min(rest.len());
    (text(&rest[..n]), &rest[n..])
}

/// Mutates one of the two parts of a packed (config, weights) input.
fn mutate_pair(rng: &mut SmallRng, config: &str, weights: &[u8]) -> Vec<u8> {
    match rng.random_range(0..2) {
        0 => pack(&mutate_json(rng, config), weights),
        _ => {
            // The safetensors header (its length, then JSON) mostly; sometimes the data.
            let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
            let region = if rng.random_range(0..4) == 0 {
                0..weights.len()
            } else {
                0..header
            };
            pack(config.as_bytes(), &mutate_bytes(rng, weights, region))
        }
    }
}

#[test]
fn adapters_load_or_fail_with_a_code() {
    let engine = Engine::from_bytes(&tiny_model_bytes()).unwrap();
    let config = engine.model.config.clone();
    let (json, f32_weights) = random_peft_adapter(&config, 2, 5);
    let int8_weights = int8_peft(&f32_weights).unwrap();
    fuzz(
        "adapter",
        1500,
        |rng| match rng.random_range(0..2) {
            0 => mutate_pair(rng, &json, &f32_weights),
            _ => mutate_pair(rng, &json, &int8_weights),
        },
        |input| {
            let (json, weights) = unpack(input);
            let _ = int8_peft(weights);
            match Adapter::from_peft(&json, weights, &config) {
                Ok(a) => a.check_fits(&config).is_ok(),
                Err(_) => false,
            }
        },
    );
}

/// A head's safetensors file of F32 tensors.
fn f32_safetensors(tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
    use safetensors::{tensor::TensorView, Dtype};
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| vec![0x3c; 4 * shape.iter().product::<usize>()])
        .collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (*n, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn switcher_and_verifier_heads_load_or_fail_with_a_code() {
    let d = 16;
    let switcher = (
        r#"{"hidden": 8, "threshold": 0.5, "pooling": "mean", "ema_alpha": 0.5, "chunk": 128}"#,
        f32_safetensors(&[
            ("w1", vec![8, d]),
            ("b1", vec![8]),
            ("w2", vec![1, 8]),
            ("b2", vec![1]),
        ]),
    );
    let verifier = (
        r#"{"suffix": "\nIs the answer above correct?"}"#,
        f32_safetensors(&[("w", vec![1, d]), ("b", vec![1])]),
    );
    fuzz(
        "heads",
        4000,
        |rng| match rng.random_range(0..2) {
            0 => [&[0u8][..], &mutate_pair(rng, switcher.0, &switcher.1)].concat(),
            _ => [&[1u8][..], &mutate_pair(rng, verifier.0, &verifier.1)].concat(),
        },
        |input| {
            let (json, weights) = unpack(input.get(1..).unwrap_or_default());
            let features = vec![0.25f32; d];
            match input.first() {
                Some(0) => Switcher::from_files(&json, weights, d)
                    .map(|s| s.prob(&features))
                    .is_ok(),
                _ => Verifier::from_files(&json, weights, d)
                    .map(|v| v.score(&features))
                    .is_ok(),
            }
        },
    );
}

#[test]
fn budget_hints_parse_or_fail_with_a_message() {
    let seed = r#"{"template": "Think for at most {budget} tokens.", "buckets": [32, 64, 128]}"#;
    fuzz(
        "budget_hint",
        4000,
        |rng| mutate_json(rng, seed),
        |input| {
            let Ok(hint) = serde_json::from_slice::<BudgetHint>(input) else {
                return false;
            };
            for b in [0, 1, 64, usize::MAX] {
                let _ = hint.apply("What is 2+2?", b);
            }
            true
        },
    );
}
