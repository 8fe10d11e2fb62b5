//! The `edge-reason` binary: every subcommand's JSON on the default model.

use crate::common;

use std::process::Command;

use common::{default_model, random_peft_adapter, tiny_llama};
use serde_json::Value;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-reason"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn tokenize_prints_ids() {
    let m = default_model();
    let (ok, out, err) = run(&[
        "tokenize",
        "--model",
        m.to_str().unwrap(),
        "--text",
        "Hello world",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out),
        vec![serde_json::json!({"ids": [19556, 905]})]
    );
}

#[test]
fn logits_prints_tokens_and_sorted_top() {
    let m = default_model();
    let (ok, out, err) = run(&[
        "logits",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "2 + 2 =",
        "--top",
        "5",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = &json_lines(&out)[0];
    assert_eq!(v["tokens"], serde_json::json!([34, 1232, 216, 34, 446]));
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    // Reference: llama.cpp's argmax for this prompt is 216 (" ") with logit 20.236.
    assert_eq!(top[0][0], 216);
    assert!(
        (top[0][1].as_f64().unwrap() - 20.236).abs() < 0.01,
        "{top:?}"
    );
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(
        logits.windows(2).all(|w| w[0] >= w[1]),
        "sorted: {logits:?}"
    );
}

#[test]
fn generate_streams_then_summarizes() {
    let m = default_model();
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-tokens",
        "12",
        "--json",
    ]);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    let pieces: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        pieces,
        last["text"].as_str().unwrap(),
        "streamed pieces add up to the text"
    );
    // The chat template renders this question exactly as fixture prompt #0, whose
    // greedy continuation by llama.cpp starts with these ids ("L'Étoile, la ...":
    // SmolLM2-135M is small).
    assert_eq!(
        last["ids"],
        serde_json::json!([60, 23, 39614, 1141, 552, 28, 2618, 2828, 313, 7712, 769, 28])
    );
    assert_eq!(last["prompt_tokens"], 37);
    assert!(last["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(last["decode_tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let m = default_model();
    let args = |seed: &'static str| {
        vec![
            "generate",
            "--model",
            m.to_str().unwrap().to_owned().leak(),
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "16",
            "--temperature",
            "0.9",
            "--seed",
            seed,
            "--json",
        ]
    };
    let ids = |seed| {
        let (ok, out, err) = run(&args(seed));
        assert!(ok, "{err}");
        json_lines(&out).last().unwrap()["ids"].clone()
    };
    assert_eq!(ids("7"), ids("7"));
    assert_ne!(ids("7"), ids("8"));
}

#[test]
fn bench_reports_both_phases() {
    let m = default_model();
    let (ok, out, err) = run(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--threads",
        "1",
        "--prefill-tokens",
        "64",
        "--decode-tokens",
        "8",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = &json_lines(&out)[0];
    assert_eq!(v["prefill_tokens"], 64);
    assert_eq!(v["decode_tokens"], 8);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["backend"], "cpu");
    assert!(
        v["prefill_tok_s"].as_f64().unwrap() > 0.0 && v["decode_tok_s"].as_f64().unwrap() > 0.0
    );
}

#[test]
fn bad_inputs_fail_with_a_message_not_a_panic() {
    let (ok, _, err) = run(&["tokenize", "--model", "/nonexistent.gguf", "--text", "x"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent.gguf") && !err.contains("panicked"),
        "{err}"
    );

    let bad = std::env::temp_dir().join("edge-reason-not-a-model.gguf");
    std::fs::write(&bad, b"definitely not a model").unwrap();
    let (ok, _, err) = run(&["logits", "--model", bad.to_str().unwrap(), "--prompt", "x"]);
    assert!(!ok);
    assert!(err.contains("not a GGUF file"), "{err}");

    let m = default_model();
    let (ok, _, err) = run(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        &"word ".repeat(300),
        "--context",
        "64",
    ]);
    assert!(!ok);
    assert!(err.contains("context holds 64"), "{err}");
}

#[test]
fn gpu_backend_answers_like_the_cpu_and_bench_names_the_adapter() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let m = default_model();
    let m = m.to_str().unwrap();
    let top = |backend: &str| {
        let (ok, out, err) = run(&[
            "logits",
            "--model",
            m,
            "--prompt",
            "The capital of France is",
            "--top",
            "3",
            "--backend",
            backend,
            "--json",
        ]);
        assert!(ok, "{backend}: {err}");
        json_lines(&out)[0]["top"].clone()
    };
    let (gpu, cpu) = (top("gpu"), top("cpu"));
    assert_eq!(gpu[0][0], cpu[0][0], "top-1 token: gpu {gpu} cpu {cpu}");
    let (g, c) = (gpu[0][1].as_f64().unwrap(), cpu[0][1].as_f64().unwrap());
    assert!((g - c).abs() < 0.75, "top-1 logit: gpu {g} cpu {c}");

    let (ok, out, err) = run(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-tokens",
        "8",
        "--backend",
        "gpu",
        "--json",
    ]);
    assert!(ok, "{err}");
    let last = json_lines(&out).pop().unwrap();
    assert!(last["text"].as_str().unwrap().contains("Paris"), "{last}");

    let (ok, out, err) = run(&[
        "bench",
        "--model",
        m,
        "--backend",
        "gpu",
        "--prefill-tokens",
        "16",
        "--decode-tokens",
        "2",
        "--streams",
        "1,4",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let b = &json_lines(&out)[0];
    assert_eq!(b["backend"], "gpu");
    assert!(b["adapter"].as_str().unwrap().len() > 3, "{b}");
    assert!(b["decode_tok_s"].as_f64().unwrap() > 0.0, "{b}");
    for m in ["1", "4"] {
        assert!(
            b["stream_step_ms"][m].as_f64().unwrap() > 0.0,
            "step time for {m} streams: {b}"
        );
    }
    // Device memory: at least the weights (Q4_1: over half the file), and 3 more
    // candidates hold at least their own 2 positions of f16 keys and values (30 layers,
    // kv_dim 192) each.
    let bytes = |m: &str| b["gpu_buffer_bytes"][m].as_u64().unwrap();
    let file = std::fs::metadata(m).unwrap().len();
    assert!(bytes("1") > file / 2, "{b}");
    assert!(
        bytes("4") >= bytes("1") + 3 * 2 * 30 * 2 * 192 * 2,
        "{} vs {}",
        bytes("4"),
        bytes("1")
    );
}

#[test]
fn reason_prints_the_events_in_order_as_json_lines() {
    let dir = std::env::temp_dir().join(format!("edge-reason-cli-reason-{}", std::process::id()));
    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let model = dir.join("tiny.gguf");
    let bytes = tiny_llama().bytes();
    std::fs::write(&model, &bytes).unwrap();
    let gguf = edge_reason::gguf::Gguf::parse(&bytes).unwrap();
    let config = edge_reason::model::Config::from_gguf(&gguf).unwrap();
    let (json, st) = random_peft_adapter(&config, 4, 3);
    std::fs::write(adapter.join("adapter_config.json"), json).unwrap();
    std::fs::write(adapter.join("adapter_model.safetensors"), st).unwrap();

    // Reason mode, 3 greedy-seeded candidates of a tiny budget, JSON events.
    let three_candidates = |backend: &str, adapter: &std::path::Path, extra: &[&str]| {
        let args = [
            "reason",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            backend,
            "--raw",
            "--adapter",
            adapter.to_str().unwrap(),
            "--mode",
            "reason",
            "--n",
            "3",
            "--budget",
            "5",
            "--answer-tokens",
            "3",
            "--seed",
            "7",
            "--json",
        ];
        run(&[&args[..], extra].concat())
    };
    for backend in ["cpu", "gpu"] {
        if backend == "gpu" && common::gpu_or_skip().is_none() {
            continue;
        }
        let (ok, out, err) = three_candidates(backend, &adapter, &["--prompt", "hello"]);
        assert!(ok, "{backend}: {err}");
        let events = json_lines(&out);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "route");
        assert_eq!(events[0]["mode"], "reason");
        assert_eq!(&types[types.len() - 2..], ["vote", "done"]);
        assert_eq!(types.iter().filter(|t| **t == "candidate_done").count(), 3);
        assert!(types.iter().filter(|t| **t == "token").count() >= 3);
        assert!(events.last().unwrap()["stats"]["kvBytes"].as_u64().unwrap() > 0);
    }

    // The budget stated in the prompt, as its bucket: the prompt is the hinted text.
    let prompt_tokens = |adapter: &std::path::Path, extra: &[&str]| {
        let args = [
            "reason",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            "--raw",
            "--prompt",
            "hello",
            "--adapter",
            adapter.to_str().unwrap(),
            "--mode",
            "reason",
            "--budget",
            "5",
            "--json",
        ];
        let (ok, out, err) = run(&[&args[..], extra].concat());
        assert!(ok, "{err}");
        json_lines(&out).pop().unwrap()["stats"]["promptTokens"].clone()
    };
    let stated = prompt_tokens(
        &adapter,
        &[
            "--budget-hint",
            "Think for at most {budget} tokens.",
            "--budget-buckets",
            "16,8",
        ],
    );
    let engine = edge_reason::engine::Engine::from_bytes(&bytes).unwrap();
    let hinted = engine
        .tokenizer
        .encode_prompt("hello\n\nThink for at most 8 tokens.")
        .unwrap();
    assert_eq!(stated, hinted.len());

    // An adapter trained with its budget stated carries how (budget_hint.json, kept by
    // export-adapter): stated by default; `--budget-hint ""` states none.
    let trained = dir.join("adapter-trained");
    std::fs::create_dir_all(&trained).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), trained.join(f)).unwrap();
    }
    std::fs::write(
        trained.join("budget_hint.json"),
        r#"{"template": "Think for at most {budget} tokens.", "buckets": [16, 8]}"#,
    )
    .unwrap();
    let trained_int8 = dir.join("adapter-trained-int8");
    let (ok, _, err) = run(&[
        "export-adapter",
        "--peft",
        trained.to_str().unwrap(),
        "--out",
        trained_int8.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(prompt_tokens(&trained_int8, &[]), hinted.len());
    let bare = engine.tokenizer.encode_prompt("hello").unwrap();
    assert_eq!(
        prompt_tokens(&trained_int8, &["--budget-hint", ""]),
        bare.len()
    );

    // Many prompts, the model loaded once, with the adapter in its exported INT8 form:
    // one summary line per prompt, the same as each request on its own.
    let int8 = dir.join("adapter-int8");
    let (ok, out, err) = run(&[
        "export-adapter",
        "--peft",
        adapter.to_str().unwrap(),
        "--out",
        int8.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let exported = json_lines(&out).pop().unwrap();
    assert!(exported["bytes"].as_u64().unwrap() < exported["peftBytes"].as_u64().unwrap());
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"prompt\": \"hello\", \"answer\": \"7\"}\n{\"prompt\": \"two plus two\"}\n",
    )
    .unwrap();
    let request = |source: &[&str]| {
        let (ok, out, err) = three_candidates("cpu", &int8, source);
        assert!(ok, "{err}");
        json_lines(&out)
    };
    let rows = request(&["--prompts", prompts.to_str().unwrap()]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[1]["id"], 2);
    for (row, prompt) in rows.iter().zip(["hello", "two plus two"]) {
        let events = request(&["--prompt", prompt]);
        assert_eq!(row["route"], events[0]);
        assert_eq!(&row["vote"], &events[events.len() - 2]);
        assert_eq!(
            row["stats"]["tokens"],
            events.last().unwrap()["stats"]["tokens"]
        );
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "candidate_done")
            .collect();
        let mut candidates = row["candidates"].as_array().unwrap().clone();
        candidates.sort_by_key(|c| c["candidate"].as_u64());
        let mut done: Vec<Value> = done.into_iter().cloned().collect();
        done.sort_by_key(|c| c["candidate"].as_u64());
        for c in &mut candidates {
            c.as_object_mut().unwrap().remove("key");
        }
        assert_eq!(candidates, done);
        for (i, text) in row["texts"].as_array().unwrap().iter().enumerate() {
            let streamed: String = events
                .iter()
                .filter(|e| e["type"] == "token" && e["candidate"] == i)
                .map(|e| e["text"].as_str().unwrap())
                .collect();
            assert_eq!(text.as_str().unwrap(), streamed, "candidate {i}");
        }
    }

    // A wrong adapter directory is a clear error.
    let (ok, _, err) = run(&[
        "reason",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "--prompt",
        "hi",
        "--adapter",
        dir.join("missing").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("adapter_config.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn features_are_what_the_runtime_routes_on() {
    use edge_reason::reason::{prefill_prompt, CpuDecoder, Decoder, Pooling};
    use edge_reason::tokenizer::Message;
    let m = default_model();
    let dir = std::env::temp_dir().join(format!("edge-reason-cli-features-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.jsonl");
    let texts = [
        "Hi there!",
        "Tom has 12 apples and buys 30 more. Then he gives 7 to Ann. How many apples does he have now?",
    ];
    std::fs::write(
        &prompts,
        format!(
            "{}\n\n{}\n",
            serde_json::json!({"id": "greeting", "prompt": texts[0]}),
            serde_json::json!({"prompt": texts[1]})
        ),
    )
    .unwrap();
    let features = |extra: &[&str]| {
        let args = [
            "features",
            "--model",
            m.to_str().unwrap(),
            "--backend",
            "cpu",
        ];
        let file = ["--prompts", prompts.to_str().unwrap()];
        run(&[&args[..], &file, extra].concat())
    };
    let (ok, out, err) = features(&["--chunk", "8"]);
    assert!(ok, "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "greeting");
    assert_eq!(rows[1]["id"], 3, "the line number when no id is given");

    // The same pooling the runtime does before routing: chat template, chunks of 8, EMA.
    let engine = edge_reason::engine::Engine::from_bytes(&std::fs::read(&m).unwrap()).unwrap();
    for (row, text) in rows.iter().zip(texts) {
        let chat = engine
            .tokenizer
            .apply_chat_template(&[Message::new("user", text)], true)
            .unwrap();
        let ids = engine.tokenizer.encode_prompt(&chat).unwrap();
        assert_eq!(row["tokens"], ids.len());
        let mut d = CpuDecoder::new(&engine.model, None);
        d.reserve(ids.len(), 1, 1).unwrap();
        let pooling = Pooling {
            chunk: 8,
            ema_alpha: 0.5,
        };
        let want =
            edge_reason::engine::ready(prefill_prompt(&mut d, &ids, Some(pooling), |_| Ok(())))
                .unwrap()
                .unwrap();
        let got: Vec<f32> = row["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), 576);
        assert_eq!(got, want, "{text}");
    }

    // A line that is not a prompt is a clear error naming the line.
    std::fs::write(&prompts, "{\"prompt\": \"ok\"}\n{\"text\": \"no\"}\n").unwrap();
    let (ok, _, err) = features(&[]);
    assert!(
        !ok && err.contains("line 2") && err.contains("\"prompt\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
