//! Test helpers: a tiny GGUF writer, fixture paths.

use std::path::PathBuf;

/// Path of a file in `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The default model fetched by `./build.sh` (tests that need it fail with a hint when absent).
pub fn default_model() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `./build.sh model` to fetch the default model",
        p.display()
    );
    p
}

/// The default model in another format (`file` under models/derived/), made by
/// `./build.sh formats` with examples/requantize.rs from tests/fixtures/smollm2_quants.json.
pub fn derived_model(file: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/derived")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing: run `./build.sh formats` to make the default model's other formats",
        p.display()
    );
    p
}

/// A GPU device, or `None` (the test is skipped, with a message) when there is none;
/// `EDGE_REASON_REQUIRE_GPU=1` (set by `./build.sh test`) makes that a failure.
pub fn gpu_or_skip() -> Option<edge_reason::gpu::GpuContext> {
    match edge_reason::gpu::GpuContext::new_blocking() {
        Ok(ctx) => Some(ctx),
        Err(e) if std::env::var("EDGE_REASON_REQUIRE_GPU").is_ok() => {
            panic!("EDGE_REASON_REQUIRE_GPU is set but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Weights converted to F32 on the way in: the CPU then computes in plain f32 (no
/// activation quantization), the same math the GPU kernels do.
pub struct Dequantize;

impl edge_reason::model::Upload<edge_reason::cpu::Cpu> for Dequantize {
    fn matrix(
        &mut self,
        _name: &str,
        m: edge_reason::cpu::Matrix,
    ) -> edge_reason::Result<edge_reason::cpu::Matrix> {
        let mut values = vec![0f32; m.rows * m.cols];
        for (r, row) in values.chunks_exact_mut(m.cols).enumerate() {
            m.row_to_f32(r, row);
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        edge_reason::cpu::Matrix::from_bytes(
            edge_reason::gguf::TensorType::F32,
            m.rows,
            m.cols,
            &bytes,
        )
    }

    fn vector(&mut self, _name: &str, v: Vec<f32>) -> edge_reason::Result<Vec<f32>> {
        Ok(v)
    }
}

/// Prompts of the whole-model GPU parity tests (native and browser): plain text, chat,
/// code, a story.
pub const PARITY_PROMPTS: [&str; 4] = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 17 * 23? Think step by step.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
];

/// A metadata value to write.
pub enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// Writes GGUF v3 files from a list of metadata and tensors.
#[derive(Default)]
pub struct GgufWriter {
    pub meta: Vec<(String, Meta)>,
    /// (name, ggml type id, dims in ggml order, raw bytes)
    pub tensors: Vec<(String, u32, Vec<u64>, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    /// Sets metadata key `k` (replacing its value when it is already set).
    pub fn meta(&mut self, k: &str, v: Meta) -> &mut Self {
        match self.meta.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v,
            None => self.meta.push((k.to_string(), v)),
        }
        self
    }

    pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), 0, dims.to_vec(), bytes));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut out, k);
            match v {
                Meta::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Meta::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Meta::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Meta::Strs(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for s in items {
                        put_str(&mut out, s);
                    }
                }
                Meta::I32s(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for x in items {
                        out.extend(x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, ttype, dims, bytes) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ttype.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset += (bytes.len() as u64).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for ((_, _, _, bytes), off) in self.tensors.iter().zip(offsets) {
            let start = out.len() as u64;
            assert_eq!(start % 32, 0);
            let _ = off;
            out.extend(bytes);
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        out
    }
}

/// A tiny random-weight `llama` model (2 layers, d=64, 4 heads / 2 KV heads, vocab 300)
/// with a byte-level vocabulary, all weights F32.
pub fn tiny_llama() -> GgufWriter {
    let (d, ff, vocab, layers, kv) = (64u64, 128u64, 300u64, 2, 32u64);
    let mut state = 1u64;
    let mut rand = |n: u64, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let mut w = GgufWriter::default();
    w.meta("general.architecture", Meta::Str("llama".into()))
        .meta("llama.block_count", Meta::U32(layers))
        .meta("llama.embedding_length", Meta::U32(d as u32))
        .meta("llama.attention.head_count", Meta::U32(4))
        .meta("llama.attention.head_count_kv", Meta::U32(2))
        .meta("llama.feed_forward_length", Meta::U32(ff as u32))
        .meta("llama.context_length", Meta::U32(128))
        .meta("llama.rope.freq_base", Meta::F32(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .meta("tokenizer.ggml.model", Meta::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", Meta::Str("gpt2".into()));
    // Byte-level tokens (GPT-2's byte-to-unicode map), a few merges, specials.
    let mut tokens: Vec<String> = (0u8..=255).map(|b| byte_char(b).to_string()).collect();
    let merges = vec!["h e".to_string(), "l l".to_string(), "he ll".to_string()];
    tokens.extend(["he", "ll", "hell"].iter().map(|s| s.to_string()));
    while tokens.len() < vocab as usize - 2 {
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let mut types = vec![1i32; vocab as usize];
    types[vocab as usize - 2] = 3;
    types[vocab as usize - 1] = 3;
    w.meta("tokenizer.ggml.tokens", Meta::Strs(tokens))
        .meta("tokenizer.ggml.merges", Meta::Strs(merges))
        .meta("tokenizer.ggml.token_type", Meta::I32s(types))
        .meta("tokenizer.ggml.eos_token_id", Meta::U32(vocab as u32 - 1));
    w.f32_tensor("token_embd.weight", &[d, vocab], &rand(d * vocab, 0.5));
    for i in 0..layers {
        let p = |n: &str| format!("blk.{i}.{n}");
        w.f32_tensor(&p("attn_norm.weight"), &[d], &vec![1.0; d as usize]);
        w.f32_tensor(&p("attn_q.weight"), &[d, d], &rand(d * d, 0.3));
        w.f32_tensor(&p("attn_k.weight"), &[d, kv], &rand(d * kv, 0.3));
        w.f32_tensor(&p("attn_v.weight"), &[d, kv], &rand(d * kv, 0.3));
        w.f32_tensor(&p("attn_output.weight"), &[d, d], &rand(d * d, 0.3));
        w.f32_tensor(&p("ffn_norm.weight"), &[d], &vec![1.0; d as usize]);
        w.f32_tensor(&p("ffn_gate.weight"), &[d, ff], &rand(d * ff, 0.3));
        w.f32_tensor(&p("ffn_up.weight"), &[d, ff], &rand(d * ff, 0.3));
        w.f32_tensor(&p("ffn_down.weight"), &[ff, d], &rand(d * ff, 0.3));
    }
    w.f32_tensor("output_norm.weight", &[d], &vec![1.0; d as usize]);
    w
}

/// GPT-2's printable stand-in for byte `b`.
pub fn byte_char(b: u8) -> char {
    let printable =
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable {
        return b as char;
    }
    let mut n = 0u32;
    for x in 0..b {
        let p =
            (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x);
        if !p {
            n += 1;
        }
    }
    char::from_u32(256 + n).unwrap()
}

/// A random rank-`r` PEFT adapter on every linear layer of a model of config `c`
/// (fixed seed): the text of `adapter_config.json` and the bytes of
/// `adapter_model.safetensors`.
pub fn random_peft_adapter(
    c: &edge_reason::model::Config,
    r: usize,
    seed: u64,
) -> (String, Vec<u8>) {
    use edge_reason::lora::Target;
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    use safetensors::{tensor::TensorView, Dtype};
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for i in 0..c.n_layer {
        for t in Target::ALL {
            let base = t.peft_prefix(i);
            let (o, inp) = t.shape(c);
            for (name, rows, cols) in [("lora_A", r, inp), ("lora_B", o, r)] {
                let data = (0..rows * cols)
                    .flat_map(|_| rng.random_range(-0.5f32..0.5).to_le_bytes())
                    .collect();
                tensors.push((format!("{base}.{name}.weight"), vec![rows, cols], data));
            }
        }
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    });
    (
        json.to_string(),
        safetensors::serialize(views, None).unwrap(),
    )
}
