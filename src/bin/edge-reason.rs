//! `edge-reason`: the native command line for app developers and shell checks.
//! Every subcommand prints one JSON document (JSON lines when streaming) with `--json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use edge_reason::bench::{self, BenchOptions};
use edge_reason::engine::{self, read_gguf_header, Sequence, DEFAULT_CONTEXT};
use edge_reason::gpu::KvPrecision;
use edge_reason::lora::Adapter;
use edge_reason::model::FileSource;
use edge_reason::reason::{
    normalize, prefill_prompt, Budget, BudgetHint, Decoder, Event, Heads, Mode, Pooling,
    ReasonOptions, Switcher, Verifier,
};
use edge_reason::runner::{self, BackendRequest, Runner};
use edge_reason::sampler::SamplerConfig;
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
        /// The ids of the chat prompt with TEXT as the user's message (BOS included as
        /// the model wants): message content is text, so control-token text in it
        /// stays characters; without this, TEXT is tokenized as it is.
        #[arg(long, conflicts_with = "no_special")]
        chat: bool,
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
    /// Writes a PEFT LoRA adapter directory in the runtime's INT8 form (i8 matrices with
    /// a scale per row; a quarter of the f32 bytes), ready to ship with the page.
    ExportAdapter {
        /// The PEFT directory (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        peft: PathBuf,
        /// The directory to write (created; its two files are replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Answer with the reasoning runtime: route (switcher), N candidates from one
    /// prompt cache with budget forcing, and the vote; events as JSON lines with --json.
    Reason {
        #[command(flatten)]
        common: Common,
        #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
        prompt: Option<String>,
        /// Many prompts, JSON lines `{"id": ..., "prompt": "..."}` (other fields are
        /// ignored; "-": standard input), the model loaded once: one JSON line per prompt
        /// with its route, each candidate's text and end, the vote and the stats.
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// Use the prompt as it is, without the model's chat template.
        #[arg(long)]
        raw: bool,
        /// A PEFT reasoning adapter directory (adapter_config.json + adapter_model.safetensors).
        /// Default: the shipped one (www/reasoning/adapter) when it fits the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// A switcher directory (switcher.json + switcher.safetensors). Default: the
        /// shipped one (www/reasoning/switcher) when it fits the model.
        #[arg(long)]
        switcher: Option<PathBuf>,
        /// Use no adapter or switcher but those given (the base model alone otherwise).
        #[arg(long)]
        no_defaults: bool,
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
        /// {budget} tokens." Not in chat mode. Default: the adapter directory's
        /// budget_hint.json, if it has one; "" states none.
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
        Command::ExportAdapter { .. } => Some(1),
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

/// Where the trained reasoning adapter and switcher for the default model are shipped
/// (with the page, so the browser loads the same files).
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/reasoning");

/// The head in `given` (an error if it does not load), else, when `shipped`, the one in
/// `SHIPPED/name` when it is there and fits this model (a note on stderr when it does
/// not: it was trained for the default model).
fn given_or_shipped<T>(
    given: Option<PathBuf>,
    name: &str,
    shipped: bool,
    load: impl Fn(&Path) -> Result<T>,
) -> Result<Option<T>> {
    if let Some(dir) = given {
        return load(&dir).map(Some);
    }
    let dir = Path::new(SHIPPED).join(name);
    if !shipped || !dir.is_dir() {
        return Ok(None);
    }
    match load(&dir) {
        Ok(head) => Ok(Some(head)),
        Err(e) => {
            eprintln!("note: the shipped {name} does not fit this model, going without it ({e})");
            Ok(None)
        }
    }
}

/// `peft/` -> `out/` in the runtime's INT8 form; prints the sizes.
fn export_adapter(peft: &Path, out: &Path) -> Result<()> {
    let io = |what: String| move |e| Error::io(what, e);
    let config = edge_reason::lora::read_in(peft, "adapter_config.json")?;
    let weights = edge_reason::lora::read_in(peft, "adapter_model.safetensors")?;
    let int8 = edge_reason::lora::int8_peft(&weights)?;
    // How the adapter was trained to be told its budget travels with it (checked).
    let hint = BudgetHint::from_adapter_dir(peft)?
        .map(|h| serde_json::to_vec(&h).expect("a BudgetHint serializes"));
    std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
    let files = [
        ("adapter_config.json", Some(&config)),
        ("adapter_model.safetensors", Some(&int8)),
        (BudgetHint::FILE, hint.as_ref()),
    ];
    for (name, bytes) in files {
        let path = out.join(name);
        let written = match bytes {
            Some(bytes) => std::fs::write(&path, bytes),
            None if path.exists() => std::fs::remove_file(&path),
            None => Ok(()),
        };
        written.map_err(io(format!("writing {}", path.display())))?;
    }
    println!(
        "{}",
        json!({"out": out.display().to_string(), "bytes": int8.len(), "peftBytes": weights.len()})
    );
    Ok(())
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
            chat,
        } => {
            let loaded = load(&common)?;
            let ids = if chat {
                loaded.tokenizer().encode_user_prompt(&text, true)?
            } else {
                loaded.tokenizer().encode(&text, !no_special)?
            };
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
            let ids = tokenizer.encode_user_prompt(&prompt, chat)?;
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
        Command::ExportAdapter { peft, out } => export_adapter(&peft, &out)?,
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
            prompts,
            raw,
            adapter,
            switcher,
            verifier,
            no_defaults,
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
            let shipped = !no_defaults;
            let adapter = given_or_shipped(adapter, "adapter", shipped, |d| {
                Ok((
                    Adapter::from_dir(d, config)?,
                    BudgetHint::from_adapter_dir(d)?,
                ))
            })?;
            let (adapter, trained_hint) = adapter.unzip();
            let switcher = given_or_shipped(switcher, "switcher", shipped, |d| {
                Switcher::from_dir(d, config.n_embd)
            })?;
            let adapter = adapter.map(|a| loaded.load_adapter(a)).transpose()?;
            let verifier = verifier
                .map(|dir| Verifier::from_dir(&dir, config.n_embd))
                .transpose()?;
            let tk = loaded.tokenizer();
            // The flag, else what the adapter was trained with (its budget_hint.json).
            // An empty --budget-hint states none.
            let flagged = match budget_hint {
                Some(t) if t.is_empty() => Some(None),
                Some(t) => Some(Some(BudgetHint::new(t, budget_buckets)?)),
                None => None,
            };
            let hint = flagged
                .unwrap_or(trained_hint.flatten())
                .filter(|_| mode != ReasonMode::Chat);
            let encode = |prompt: &str| -> Result<Vec<u32>> {
                let prompt = match &hint {
                    Some(h) => h.apply(prompt, budget),
                    None => prompt.to_string(),
                };
                tk.encode_user_prompt(&prompt, !raw)
            };
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
            let heads = Heads {
                switcher: switcher.as_ref(),
                verifier: verifier.as_ref(),
            };
            if let Some(path) = prompts {
                let mut out = std::io::stdout().lock();
                for_each_prompt(&path, |id, prompt| {
                    let ids = encode(prompt)?;
                    let mut summary = Summary::default();
                    pollster::block_on(loaded.reason(
                        adapter.as_ref(),
                        heads,
                        &ids,
                        &options,
                        |event| {
                            summary.add(event);
                            Ok(())
                        },
                    ))?;
                    let row = summary.into_json(id, ids.len());
                    writeln!(out, "{row}").map_err(|e| Error::io("writing to stdout", e))
                })?;
            } else {
                let ids = encode(prompt.as_deref().unwrap_or_default())?;
                let json_out = common.json;
                pollster::block_on(loaded.reason(
                    adapter.as_ref(),
                    heads,
                    &ids,
                    &options,
                    |event| print_event(event, json_out),
                ))?;
            }
        }
    }
    Ok(())
}

/// One input line of `features` and `reason --prompts` (other fields are ignored, so a
/// dataset's own lines can be passed as they are).
#[derive(serde::Deserialize)]
struct PromptLine {
    id: Option<serde_json::Value>,
    prompt: String,
}

/// Calls `f(id, prompt)` for each JSON line of `path` ("-": standard input); a line
/// without an id gets its line number. Errors name the file and line.
fn for_each_prompt(
    path: &Path,
    mut f: impl FnMut(serde_json::Value, &str) -> Result<()>,
) -> Result<()> {
    use std::io::BufRead;
    let name = path.display().to_string();
    let input: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).map_err(|e| Error::io(format!("opening {name}"), e))?;
        Box::new(std::io::BufReader::new(file))
    };
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
        let id = item.id.unwrap_or_else(|| json!(i + 1));
        f(id, &item.prompt).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{at}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

/// `edge-reason features`: the pooled features of each prompt in `path`, as JSON lines.
fn print_features(loaded: &Runner, path: &Path, raw: bool, pooling: Pooling) -> Result<()> {
    let tk = loaded.tokenizer();
    let context = loaded.config().context_length;
    let mut out = std::io::stdout().lock();
    for_each_prompt(path, |id, prompt| {
        let ids = tk.encode_user_prompt(prompt, !raw)?;
        if ids.is_empty() || ids.len() > context {
            return Err(Error::InvalidArgument(format!(
                "the prompt is {} tokens; 1 to {context} fit the model's context",
                ids.len()
            )));
        }
        let mut decoder = loaded.decoder(None)?;
        decoder.reserve(ids.len(), 1, 1)?;
        let features = pollster::block_on(prefill_prompt(
            &mut decoder,
            &ids,
            Some(pooling),
            |_| Ok(()),
        ))?
        .unwrap_or_default();
        let row = json!({"id": id, "tokens": ids.len(), "features": features});
        writeln!(out, "{row}").map_err(|e| Error::io("writing the features to stdout", e))
    })
}

/// One request of `reason --prompts`, gathered from its events: the route, each
/// candidate's text and end, the vote and the stats.
#[derive(Default)]
struct Summary {
    route: serde_json::Value,
    texts: Vec<String>,
    candidates: Vec<serde_json::Value>,
    vote: serde_json::Value,
    stats: serde_json::Value,
}

impl Summary {
    fn add(&mut self, event: &Event) {
        fn grow<T: Clone>(v: &mut Vec<T>, i: usize, empty: T) {
            if v.len() <= i {
                v.resize(i + 1, empty);
            }
        }
        match event {
            Event::Route { .. } => self.route = json!(event),
            Event::Token {
                candidate, text, ..
            } => {
                grow(&mut self.texts, *candidate, String::new());
                self.texts[*candidate].push_str(text);
            }
            Event::CandidateDone {
                candidate, answer, ..
            } => {
                grow(&mut self.candidates, *candidate, json!(null));
                let mut done = json!(event);
                // The vote's key of its answer, so votes over subsets can be recounted.
                done["key"] = json!(answer.as_deref().map(normalize));
                self.candidates[*candidate] = done;
            }
            Event::Vote { .. } => self.vote = json!(event),
            Event::Done { stats } => self.stats = json!(stats),
            Event::Prefill { .. } => {}
        }
    }

    fn into_json(mut self, id: serde_json::Value, prompt_tokens: usize) -> serde_json::Value {
        // A text per candidate, empty for one that ended before its first token.
        self.texts.resize(self.candidates.len(), String::new());
        json!({
            "id": id,
            "promptTokens": prompt_tokens,
            "route": self.route,
            "texts": self.texts,
            "candidates": self.candidates,
            "vote": self.vote,
            "stats": self.stats,
        })
    }
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
        Event::Token { .. } | Event::Prefill { .. } => {}
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
