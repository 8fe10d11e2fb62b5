//! `edge-reason`: the native command line for app developers and shell checks.
//! Every subcommand prints one JSON document (JSON lines when streaming) with `--json`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use edge_reason::engine::{self, now_seconds, read_gguf_header, Engine, Sequence, DEFAULT_CONTEXT};
use edge_reason::gpu::{GpuContext, GpuModel, GpuSequence};
use edge_reason::model::{FileSource, Logits};
use edge_reason::sampler::SamplerConfig;
use edge_reason::tokenizer::{Message, Tokenizer};
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

#[derive(Args)]
struct Common {
    /// Path to a .gguf model.
    #[arg(long)]
    model: PathBuf,
    /// Compute backend: auto takes a hardware GPU when there is one, else the CPU
    /// (a software GPU such as lavapipe is used only when asked for).
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
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
    },
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Tokenize { common, .. }
        | Command::Logits { common, .. }
        | Command::Generate { common, .. }
        | Command::Bench { common, .. } => common.threads,
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

/// A tokenizer and a model on the GPU.
struct OnGpu {
    tokenizer: Tokenizer,
    gm: GpuModel,
}

/// A model loaded on the backend `--backend` chose.
enum Loaded {
    Cpu(Box<Engine>),
    Gpu(Box<OnGpu>),
}

impl Loaded {
    fn tokenizer(&self) -> &Tokenizer {
        match self {
            Loaded::Cpu(e) => &e.tokenizer,
            Loaded::Gpu(g) => &g.tokenizer,
        }
    }

    /// "cpu", or the GPU adapter's name and API.
    fn adapter(&self) -> String {
        match self {
            Loaded::Cpu(_) => "cpu".into(),
            Loaded::Gpu(g) => {
                format!("{} ({})", g.gm.ctx.adapter.name, g.gm.ctx.adapter.backend)
            }
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Loaded::Cpu(_) => "cpu",
            Loaded::Gpu(_) => "gpu",
        }
    }

    /// A fresh sequence of up to `capacity` tokens.
    fn sequence(&self, capacity: usize) -> Result<Box<dyn Sequence + '_>> {
        Ok(match self {
            Loaded::Cpu(e) => Box::new(engine::CpuSequence {
                engine: e,
                cache: e.new_cache(capacity),
            }),
            Loaded::Gpu(g) => {
                let capacity = capacity.min(g.gm.model.config.context_length);
                Box::new(GpuSequence {
                    gm: &g.gm,
                    session: g.gm.session(capacity)?,
                    capacity,
                })
            }
        })
    }
}

fn load(common: &Common) -> Result<Loaded> {
    if let Some(n) = common.threads {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ));
        }
    }
    let ctx = match common.backend {
        Backend::Cpu => None,
        Backend::Gpu => Some(GpuContext::new_blocking()?),
        Backend::Auto => match GpuContext::new_blocking() {
            Ok(ctx) if ctx.adapter.device_type != "cpu" => Some(ctx),
            Ok(ctx) => {
                eprintln!(
                    "note: using the CPU backend: the only GPU is a software one ({}); pass --backend gpu to use it anyway",
                    ctx.adapter.name
                );
                None
            }
            Err(e) => {
                eprintln!("note: using the CPU backend: {e}");
                None
            }
        },
    };
    match ctx {
        None => Ok(Loaded::Cpu(Box::new(Engine::from_file(&common.model)?))),
        Some(ctx) => {
            let path = &common.model;
            let gguf = read_gguf_header(path)?;
            let tokenizer = Tokenizer::from_gguf(&gguf)?;
            let gm = GpuModel::load_blocking(ctx, &gguf, &mut FileSource::open(path)?)?;
            Ok(Loaded::Gpu(Box::new(OnGpu { tokenizer, gm })))
        }
    }
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
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
            let logits = loaded.sequence(ids.len())?.feed(&ids)?;
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
            let g = engine::generate(
                tokenizer,
                seq.as_mut(),
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
            )?;
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
        } => {
            let loaded = load(&common)?;
            let r = bench(&loaded, prefill_tokens, decode_tokens, runs.max(1))?;
            let mut out = json!({
                "backend": loaded.backend(),
                "adapter": loaded.adapter(),
                "threads": rayon::current_num_threads(),
                "runs": runs.max(1),
                "prefill_tokens": prefill_tokens,
                "prefill_tok_s": r.0,
                "decode_tokens": decode_tokens,
                "decode_tok_s": r.1,
            });
            if let Loaded::Gpu(g) = &loaded {
                let steps = decode_tokens.clamp(1, 32);
                let mut ms = serde_json::Map::new();
                for m in [1, 2, 4, 8] {
                    ms.insert(
                        m.to_string(),
                        json!(stream_step_ms(&g.gm, m, steps, runs.max(1))?),
                    );
                }
                out["stream_step_ms"] = ms.into();
            }
            if common.json {
                print_json(out);
            } else {
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            }
        }
    }
    Ok(())
}

/// Median milliseconds of one decode step for `m` streams over a shared 32-token
/// prefix (one pass, one submission, `m` ids read back), over `steps` steps.
fn stream_step_ms(gm: &GpuModel, m: usize, steps: usize, runs: usize) -> Result<f64> {
    let prefix: Vec<u32> = (0..32).map(|i| 100 + 7 * i).collect();
    let mut times = Vec::new();
    for run in 0..runs + 1 {
        let mut s = edge_reason::gpu::GpuSession::new(gm, prefix.len(), m, steps + 1)?;
        gm.append(&mut s, &prefix, Logits::Last)?;
        pollster::block_on(gm.read_ids(&s))?;
        s.fork(m)?;
        let mut tokens: Vec<u32> = (0..m as u32).map(|i| 200 + i).collect();
        let t0 = now_seconds();
        for _ in 0..steps {
            gm.step_streams(&mut s, &tokens)?;
            tokens = pollster::block_on(gm.read_ids(&s))?;
        }
        // The first run compiles the pipelines for this width: not timed.
        if run > 0 {
            times.push((now_seconds() - t0) * 1000.0 / steps as f64);
        }
    }
    Ok(median(times))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median prefill and decode tokens/s: prefill of `n_prefill` pseudo-random tokens into
/// an empty cache; decode of `n_decode` single-token steps from a one-token prompt (as
/// llama-bench's pp/tg tests do).
fn bench(loaded: &Loaded, n_prefill: usize, n_decode: usize, runs: usize) -> Result<(f64, f64)> {
    if n_prefill == 0 {
        return Err(Error::InvalidArgument(
            "--prefill-tokens must be at least 1".into(),
        ));
    }
    let vocab = match loaded {
        Loaded::Cpu(e) => e.model.config.vocab_size,
        Loaded::Gpu(g) => g.gm.model.config.vocab_size,
    } as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let prompt: Vec<u32> = (0..n_prefill)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab) as u32
        })
        .collect();
    // One warm-up pass of each so that page faults, thread start-up and pipeline
    // compilation are not timed.
    let warm = &prompt[..n_prefill.min(32)];
    loaded.sequence(warm.len())?.feed_greedy(warm)?;
    loaded.sequence(1)?.feed_greedy(&prompt[..1])?;
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut seq = loaded.sequence(n_prefill)?;
        let t0 = now_seconds();
        seq.feed_greedy(&prompt)?;
        pre.push(n_prefill as f64 / (now_seconds() - t0));

        let mut seq = loaded.sequence(n_decode + 1)?;
        let mut next = seq.feed_greedy(&prompt[..1])?;
        let t0 = now_seconds();
        for _ in 0..n_decode {
            next = seq.feed_greedy(&[next])?;
        }
        dec.push(n_decode as f64 / (now_seconds() - t0));
    }
    Ok((median(pre), median(dec)))
}
