//! `edge-reason`: the native command line for app developers and shell checks.
//! Every subcommand prints one JSON document (JSON lines when streaming) with `--json`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use edge_reason::bench::{self, BenchOptions};
use edge_reason::engine::{self, read_gguf_header, Sequence, DEFAULT_CONTEXT};
use edge_reason::gpu::KvPrecision;
use edge_reason::lora::Adapter;
use edge_reason::model::FileSource;
use edge_reason::reason::{
    prefill_prompt, Budget, BudgetHint, Decoder, Event, Heads, Mode, Pooling, ReasonOptions,
    Switcher, Verifier,
};
use edge_reason::runner::{self, BackendRequest, Runner};
use edge_reason::sampler::SamplerConfig;
use edge_reason::tokenizer::Message;
use edge_reason::{Error, Result};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "edge-reason",
    version,
    about = "Run a small GGUF language model on the CPU or the GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KvCache {
    F16,
    F32,
    /// INT8 with one scale per position and KV head (KV8).
    Int8,
}

#[derive(Args)]
struct Common {
    /// Path to a .gguf model.
    #[arg(long)]
    model: PathBuf,
    /// Compute backend: auto takes a hardware GPU when there is one, else the CPU
    /// (a software GPU such as lavapipe is used only when asked for).
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Precision of the GPU's KV cache (the CPU's is f32).
    #[arg(long, value_enum, default_value = "f16")]
    kv_cache: KvCache,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Token ids of a text (special tokens in the text are parsed).
    Tokenize {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        text: String,
        /// Treat special-token text like `<|im_start|>` as plain text.
        #[arg(long)]
        no_special: bool,
    },
    /// The highest logits at the last position of a raw prompt (no chat template).
    Logits {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Generate text, streamed as it is produced.
    Generate {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user message in the model's chat template.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Context size in tokens.
        #[arg(long, default_value_t = DEFAULT_CONTEXT)]
        context: usize,
    },
    /// Prefill and decode speed.
    Bench {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 512)]
        prefill_tokens: usize,
        #[arg(long, default_value_t = 128)]
        decode_tokens: usize,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Decode step time for these stream counts (GPU only).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        streams: Vec<usize>,
        /// Also time each kernel of one decode step per stream count (GPU only).
        #[arg(long)]
        profile: bool,
    },
    /// What the shared prompt cache and batched candidates buy: time to the first
    /// reasoning token (shared vs re-encoding the prompt with the adapter on), KV bytes
    /// of N candidates, decode step time of 1 vs N candidates with the adapter on.
    BenchReason {
        #[command(flatten)]
        common: Common,
        /// A PEFT reasoning adapter directory; without one a random rank-16 adapter
        /// stands in (timing does not depend on its values).
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long, default_value_t = 500)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long, default_value_t = 16)]
        steps: usize,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The switcher's features of each prompt, exactly as the runtime computes them
    /// before routing (chat template, base prefill in chunks, EMA of the chunk means of
    /// the final hidden states): one JSON line `{"id", "tokens", "features"}` per input
    /// line `{"id", "prompt"}`. For training the switcher on what the browser sees.
    Features {
        #[command(flatten)]
        common: Common,
        /// JSON lines `{"id": ..., "prompt": "..."}` ("-": standard input); a line without
        /// an id gets its line number.
        #[arg(long)]
        prompts: PathBuf,
        /// Use each prompt as it is, without the model's chat template.
        #[arg(long)]
        raw: bool,
        /// Prefill chunk length (the switcher's `chunk`).
        #[arg(long, default_value_t = 128)]
        chunk: usize,
        /// Weight of the newest chunk's mean (the switcher's `ema_alpha`).
        #[arg(long, default_value_t = 0.5)]
        ema_alpha: f32,
    },
    /// Answer with the reasoning runtime: route (switcher), N candidates from one
    /// prompt cache with budget forcing, and the vote; events as JSON lines with --json.
    Reason {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        prompt: String,
        /// Use the prompt as it is, without the model's chat template.
        #[arg(long)]
        raw: bool,
        /// A PEFT reasoning adapter directory (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// A switcher directory (switcher.json + switcher.safetensors).
        #[arg(long)]
        switcher: Option<PathBuf>,
        /// A verifier directory (verifier.json + verifier.safetensors): with --weighted,
        /// it weighs each finished candidate instead of its answer's log-probability.
        #[arg(long)]
        verifier: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: ReasonMode,
        /// Candidates when reasoning.
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Thinking tokens per candidate before `</think>` is forced.
        #[arg(long, default_value_t = 256)]
        budget: usize,
        /// Answer tokens after the thinking.
        #[arg(long, default_value_t = 32)]
        answer_tokens: usize,
        /// Tokens of a direct (chat) answer.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0.7)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Weigh votes by the answers' mean token log-probability.
        #[arg(long)]
        weighted: bool,
        /// Let every candidate finish even when the vote is decided.
        #[arg(long)]
        no_early_stop: bool,
        /// State the thinking budget at the end of the prompt (adapters trained with
        /// budget buckets): `{budget}` becomes the budget, e.g. "Think for at most
        /// {budget} tokens." Not in chat mode.
        #[arg(long)]
        budget_hint: Option<String>,
        /// The budgets the adapter was trained with: the smallest at least --budget is
        /// stated.
        #[arg(long, value_delimiter = ',')]
        budget_buckets: Vec<usize>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReasonMode {
    Auto,
    Chat,
    Reason,
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Tokenize { common, .. }
        | Command::Logits { common, .. }
        | Command::Generate { common, .. }
        | Command::Bench { common, .. }
        | Command::BenchReason { common, .. }
        | Command::Reason { common, .. }
        | Command::Features { common, .. } => common.threads,
    };
    // The whole command runs inside the pool, so the calling thread is one of its
    // workers: with one thread every parallel loop runs inline, and with more the
    // caller works instead of waiting for a hand-off at every matmul.
    let pool = match threads {
        Some(0) => Err("--threads must be at least 1".to_string()),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| e.to_string()),
        None => rayon::ThreadPoolBuilder::new()
            .build()
            .map_err(|e| e.to_string()),
    };
    let pool = pool.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if let Err(e) = pool.install(|| run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn load(common: &Common) -> Result<Runner> {
    if let Some(n) = common.threads {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ));
        }
    }
    let request = match common.backend {
        Backend::Cpu => BackendRequest::Cpu,
        Backend::Gpu => BackendRequest::Gpu,
        Backend::Auto => BackendRequest::Auto,
    };
    let choice = pollster::block_on(runner::choose(request))?;
    if choice.ctx.is_none() && request == BackendRequest::Auto {
        eprintln!("note: {}", choice.reason);
    }
    let path = &common.model;
    let gguf = read_gguf_header(path)?;
    let mut source = FileSource::open(path)?;
    let mut runner = pollster::block_on(Runner::load(&gguf, &mut source, choice.ctx))?;
    runner.set_kv_precision(match common.kv_cache {
        KvCache::F16 => KvPrecision::F16,
        KvCache::F32 => KvPrecision::F32,
        KvCache::Int8 => KvPrecision::Int8,
    });
    Ok(runner)
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// A benchmark's report with the thread count: one JSON line, or indented for people.
fn print_report(mut report: serde_json::Value, json_out: bool) {
    report["threads"] = json!(rayon::current_num_threads());
    if json_out {
        print_json(report);
    } else {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Tokenize {
            common,
            text,
            no_special,
        } => {
            let loaded = load(&common)?;
            let ids = loaded.tokenizer().encode(&text, !no_special)?;
            if common.json {
                print_json(json!({ "ids": ids }));
            } else {
                println!("{ids:?}");
            }
        }
        Command::Logits {
            common,
            prompt,
            top,
        } => {
            let loaded = load(&common)?;
            let ids = loaded.tokenizer().encode_prompt(&prompt)?;
            let logits = pollster::block_on(loaded.sequence(ids.len())?.feed(&ids))?;
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top: Vec<(usize, f32)> = order.iter().take(top).map(|&i| (i, logits[i])).collect();
            if common.json {
                print_json(json!({ "tokens": ids, "top": top }));
            } else {
                println!("tokens: {ids:?}");
                for (id, l) in top {
                    println!(
                        "{id:>8} {l:>10.4} {:?}",
                        loaded.tokenizer().decode(&[id as u32])?
                    );
                }
            }
        }
        Command::Generate {
            common,
            prompt,
            chat,
            max_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            context,
        } => {
            let loaded = load(&common)?;
            let tokenizer = loaded.tokenizer();
            let text = if chat {
                tokenizer.apply_chat_template(&[Message::new("user", &prompt)], true)?
            } else {
                prompt
            };
            let ids = tokenizer.encode_prompt(&text)?;
            let sampler = SamplerConfig {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
                ..SamplerConfig::default()
            };
            let json_out = common.json;
            let mut stdout = std::io::stdout();
            let capacity = context.min(ids.len() + max_tokens);
            let mut seq = loaded.sequence(capacity)?;
            let g = pollster::block_on(engine::generate(
                tokenizer,
                &mut seq,
                &ids,
                max_tokens,
                sampler,
                |piece| {
                    if json_out {
                        print_json(json!({ "text": piece }));
                    } else {
                        print!("{piece}");
                        let _ = stdout.flush();
                    }
                },
            ))?;
            if json_out {
                print_json(json!({
                    "ids": g.ids,
                    "text": g.text,
                    "prompt_tokens": g.prompt_tokens,
                    "stop": g.stop,
                    "prefill_tok_s": g.prefill_tok_s,
                    "decode_tok_s": g.decode_tok_s,
                }));
            } else {
                println!();
                eprintln!(
                    "[{} prompt tokens, {:.1} tok/s prefill; {} generated, {:.1} tok/s decode; stop: {}]",
                    g.prompt_tokens,
                    g.prefill_tok_s,
                    g.ids.len(),
                    g.decode_tok_s,
                    g.stop
                );
            }
        }
        Command::Bench {
            common,
            prefill_tokens,
            decode_tokens,
            runs,
            streams,
            profile,
        } => {
            let loaded = load(&common)?;
            let options = BenchOptions {
                prefill_tokens,
                decode_tokens,
                runs,
                streams,
                profile,
            };
            let report = pollster::block_on(bench::run(&loaded, &options))?;
            print_report(json!(report), common.json);
        }
        Command::BenchReason {
            common,
            adapter,
            prompt_tokens,
            n,
            steps,
            runs,
        } => {
            let loaded = load(&common)?;
            let adapter = adapter
                .map(|dir| loaded.load_adapter(Adapter::from_dir(&dir, loaded.config())?))
                .transpose()?;
            let options = bench::reason::ReasonBenchOptions {
                prompt_tokens,
                n,
                steps,
                runs,
                ..Default::default()
            };
            let report =
                pollster::block_on(bench::reason::run(&loaded, adapter.as_ref(), &options))?;
            print_report(json!(report), common.json);
        }
        Command::Features {
            common,
            prompts,
            raw,
            chunk,
            ema_alpha,
        } => {
            let loaded = load(&common)?;
            print_features(&loaded, &prompts, raw, Pooling { chunk, ema_alpha })?;
        }
        Command::Reason {
            common,
            prompt,
            raw,
            adapter,
            switcher,
            verifier,
            mode,
            n,
            budget,
            answer_tokens,
            max_tokens,
            temperature,
            seed,
            weighted,
            no_early_stop,
            budget_hint,
            budget_buckets,
        } => {
            let loaded = load(&common)?;
            let config = loaded.config();
            let adapter = adapter
                .map(|dir| loaded.load_adapter(Adapter::from_dir(&dir, config)?))
                .transpose()?;
            let switcher = switcher
                .map(|dir| Switcher::from_dir(&dir, config.n_embd))
                .transpose()?;
            let verifier = verifier
                .map(|dir| Verifier::from_dir(&dir, config.n_embd))
                .transpose()?;
            let tk = loaded.tokenizer();
            let prompt = match budget_hint.filter(|_| mode != ReasonMode::Chat) {
                Some(template) => BudgetHint {
                    template,
                    buckets: budget_buckets,
                }
                .apply(&prompt, budget),
                None => prompt,
            };
            let text = if raw {
                prompt
            } else {
                tk.apply_chat_template(&[Message::new("user", &prompt)], true)?
            };
            let ids = tk.encode_prompt(&text)?;
            let options = ReasonOptions {
                mode: match mode {
                    ReasonMode::Auto => Mode::Auto,
                    ReasonMode::Chat => Mode::Chat,
                    ReasonMode::Reason => Mode::Reason,
                },
                n,
                budget: Budget {
                    think: budget,
                    answer: answer_tokens,
                },
                max_tokens,
                temperature,
                seed,
                weighted,
                early_stop: !no_early_stop,
                ..ReasonOptions::default()
            };
            let json_out = common.json;
            pollster::block_on(loaded.reason(
                adapter.as_ref(),
                Heads {
                    switcher: switcher.as_ref(),
                    verifier: verifier.as_ref(),
                },
                &ids,
                &options,
                |event| print_event(event, json_out),
            ))?;
        }
    }
    Ok(())
}

/// One input line of `features`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptLine {
    id: Option<serde_json::Value>,
    prompt: String,
}

/// `edge-reason features`: the pooled features of each prompt in `path`, as JSON lines.
fn print_features(loaded: &Runner, path: &PathBuf, raw: bool, pooling: Pooling) -> Result<()> {
    use std::io::BufRead;
    let name = path.display().to_string();
    let input: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {name}"), e))?;
        Box::new(std::io::BufReader::new(f))
    };
    let tk = loaded.tokenizer();
    let context = loaded.config().context_length;
    let mut out = std::io::stdout().lock();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("reading {name}"), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}, line {}", i + 1);
        let item: PromptLine = serde_json::from_str(&line).map_err(|e| {
            Error::InvalidArgument(format!(
                "{at}: {e}; each line is {{\"id\": ..., \"prompt\": \"...\"}}"
            ))
        })?;
        let text = if raw {
            item.prompt
        } else {
            tk.apply_chat_template(&[Message::new("user", &item.prompt)], true)?
        };
        let ids = tk.encode_prompt(&text)?;
        if ids.is_empty() || ids.len() > context {
            return Err(Error::InvalidArgument(format!(
                "{at}: the prompt is {} tokens; 1 to {context} fit the model's context",
                ids.len()
            )));
        }
        let mut decoder = loaded.decoder(None)?;
        decoder.reserve(ids.len(), 1, 1)?;
        let features = pollster::block_on(prefill_prompt(&mut decoder, &ids, Some(pooling)))?
            .unwrap_or_default();
        let id = item.id.unwrap_or_else(|| json!(i + 1));
        let row = json!({"id": id, "tokens": ids.len(), "features": features});
        writeln!(out, "{row}").map_err(|e| Error::io("writing the features to stdout", e))?;
    }
    Ok(())
}

/// An event as a JSON line, or as text for people (tokens of candidate 0 streamed). A
/// closed stdout (`| head`) stops the request instead of decoding for nobody.
fn print_event(event: &Event, json_out: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let closed = |e| Error::io("writing the events to stdout", e);
    if json_out {
        return writeln!(out, "{}", json!(event)).map_err(closed);
    }
    match event {
        Event::Route { mode, p_reason } => {
            eprintln!("[route: {} (p_reason {p_reason:?})]", json!(mode))
        }
        Event::Token {
            candidate: 0, text, ..
        } => {
            write!(out, "{text}")
                .and_then(|_| out.flush())
                .map_err(closed)?;
        }
        Event::Token { .. } => {}
        Event::CandidateDone {
            candidate,
            answer,
            tokens,
            reason,
            ..
        } => eprintln!("\n[candidate {candidate}: {answer:?}, {tokens} tokens, {reason}]"),
        Event::Vote {
            answer,
            stopped_early,
            ..
        } => writeln!(
            out,
            "\nanswer: {} ({stopped_early} stopped early)",
            answer.as_deref().unwrap_or("(none)")
        )
        .map_err(closed)?,
        Event::Done { stats } => eprintln!("[{}]", json!(stats)),
    }
    Ok(())
}
