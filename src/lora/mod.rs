//! LoRA adapters: PEFT directories (`adapter_config.json` + `adapter_model.safetensors`,
//! f32/f16/bf16) and an INT8 form of our own (i8 weights + one f32 scale per row), read
//! into [`LoraMatrix`] (the INT8 form as it is, float ones as f32) and checked against
//! the base model's shapes.
//!
//! An adapted linear layer computes `y = W x + s * B (A x)` with `A` (r, in), `B`
//! (out, r) and `s = alpha / r` (`alpha / sqrt(r)` with rsLoRA); the adapter is never
//! merged into the INT4 weights. Here `s` is folded into `B` at load, and the q/k rows
//! of `llama` adapters are put in GGUF's RoPE order (PEFT files are in Hugging Face's).

use std::collections::HashMap;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::{Arch, Config};

mod matrix;
pub use matrix::{Int8Rows, LoraMatrix};

/// The linear layers an adapter can target, in a block's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module name in PEFT / Hugging Face models.
    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The parent module in PEFT tensor names.
    fn peft_parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            Target::Gate | Target::Up | Target::Down => "mlp",
        }
    }

    /// The PEFT name of this layer in block `layer`, before `.lora_A.weight`.
    pub fn peft_prefix(self, layer: usize) -> String {
        format!(
            "base_model.model.model.layers.{layer}.{}.{}",
            self.peft_parent(),
            self.peft_name()
        )
    }

    fn from_peft(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.peft_name() == name)
    }

    /// (out, in) of this layer in a model of config `c`.
    pub fn shape(self, c: &Config) -> (usize, usize) {
        let (d, q, kv, ff) = (c.n_embd, c.n_head * c.head_dim, c.kv_dim(), c.n_ff);
        match self {
            Target::Q => (q, d),
            Target::K | Target::V => (kv, d),
            Target::O => (d, q),
            Target::Gate | Target::Up => (ff, d),
            Target::Down => (d, ff),
        }
    }
}

/// The low-rank update of one linear layer: `y += B (A x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// (rank, in)
    pub a: LoraMatrix,
    /// (out, rank), already multiplied by the adapter's scale.
    pub b: LoraMatrix,
    pub rank: usize,
    pub inp: usize,
    pub out: usize,
}

/// Output rows of `B` one parallel task of [`LoraPair::apply`] computes.
const B_ROWS_PER_TASK: usize = 64;

impl LoraPair {
    /// The pair of f32 matrices `a` (rank, in) and `b` (out, rank) in our INT8 form.
    pub fn int8(a: &[f32], b: &[f32], rank: usize, inp: usize, out: usize) -> LoraPair {
        debug_assert_eq!((a.len(), b.len()), (rank * inp, out * rank));
        LoraPair {
            a: LoraMatrix::Int8(Int8Rows::quantize(a, inp)),
            b: LoraMatrix::Int8(Int8Rows::quantize(b, rank)),
            rank,
            inp,
            out,
        }
    }

    /// `y += B (A x)` for every row of `x` (m, in) into the same row of `y` (m, out):
    /// `A` and `B` are each read once for all `m` rows (the batched candidates of a
    /// decode step), and both products are split over the thread pool like the base
    /// matmul beside them. Each row's result is the same, bit for bit, as on its own.
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        use crate::cpu::for_each_chunk;
        let (r, m) = (self.rank, x.len() / self.inp);
        debug_assert_eq!(y.len(), m * self.out);
        // Work in 32 multiply-adds, the unit the matmuls' fork threshold counts.
        let work = |macs: usize| macs / 32;
        // tt (rank, m): tt[j][i] = A_j . x_i.
        let mut tt = vec![0f32; r * m];
        for_each_chunk(&mut tt, m, 1, work(r * m * self.inp), |(j, row)| {
            for (t, xi) in row.iter_mut().zip(x.chunks_exact(self.inp)) {
                *t = self.a.dot_row(j, xi);
            }
        });
        // t (m, rank).
        let t: Vec<f32> = (0..m * r).map(|k| tt[(k % r) * m + k / r]).collect();
        // yt (out, m): yt[o][i] = B_o . t_i.
        let mut yt = vec![0f32; self.out * m];
        let per_task = B_ROWS_PER_TASK * m;
        for_each_chunk(
            &mut yt,
            per_task,
            1,
            work(m * self.out * r),
            |(task, tile)| {
                let o0 = task * B_ROWS_PER_TASK;
                for (k, col) in tile.chunks_exact_mut(m).enumerate() {
                    for (v, ti) in col.iter_mut().zip(t.chunks_exact(r)) {
                        *v = self.b.dot_row(o0 + k, ti);
                    }
                }
            },
        );
        for (o, col) in yt.chunks_exact(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                y[i * self.out + o] += v;
            }
        }
    }

    /// Bytes of both matrices in memory.
    pub fn n_bytes(&self) -> usize {
        self.a.n_bytes() + self.b.n_bytes()
    }
}

/// `adapter_config.json`, the fields we use.
#[derive(Debug, Clone, serde::Deserialize)]
struct PeftConfig {
    r: usize,
    lora_alpha: f64,
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    peft_type: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

/// A loaded adapter: one optional [`LoraPair`] per layer and target.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub rank: usize,
    /// `alpha / r` (or `alpha / sqrt(r)`), already folded into every `B`.
    pub scale: f32,
    pub targets: Vec<Target>,
    /// `layers[i][t as usize]`
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Adapter(msg.into())
}

/// Heads of target `t` whose output rows GGUF holds in another order than the Hugging
/// Face checkpoint the adapter was trained on: q and k of `llama` models. HF Llama
/// orders each head's rows as two halves (RoPE by `rotate_half`); llama.cpp's converter
/// permutes them into interleaved pairs, which our RoPE reads. (`qwen2` uses NeoX RoPE,
/// whose converter keeps HF's order.)
fn rope_permuted_heads(model: &Config, t: Target) -> Option<usize> {
    match (model.arch, t) {
        (Arch::Llama, Target::Q) => Some(model.n_head),
        (Arch::Llama, Target::K) => Some(model.n_kv_head),
        _ => None,
    }
}

/// For the rows of a q or k projection (`heads * head_dim`), the HF row each GGUF row
/// comes from: GGUF row `2 i + p` of a head is HF row `p * head_dim / 2 + i` (llama.cpp's
/// `permute`).
fn gguf_rope_rows(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..heads * head_dim)
        .map(|dst| {
            let (h, r) = (dst / head_dim, dst % head_dim);
            let (i, p) = (r / 2, r % 2);
            h * head_dim + p * half + i
        })
        .collect()
}

impl Adapter {
    /// Reads a PEFT adapter (the text of `adapter_config.json` and the bytes of
    /// `adapter_model.safetensors`) for a model of config `model`, or our INT8 form of
    /// one (same names, i8 tensors with a `<name>.scale` f32 vector of one scale per row).
    pub fn from_peft(config_json: &str, safetensors: &[u8], model: &Config) -> Result<Adapter> {
        let cfg: PeftConfig = serde_json::from_str(config_json)
            .map_err(|e| bad(format!("adapter_config.json: {e}")))?;
        if let Some(t) = cfg.peft_type.as_deref().filter(|t| *t != "LORA") {
            return Err(bad(format!(
                "peft_type is {t}; only LORA adapters are supported"
            )));
        }
        if cfg.fan_in_fan_out {
            return Err(bad(
                "fan_in_fan_out adapters (GPT-2 Conv1D layers) are not supported",
            ));
        }
        if cfg.r == 0 || cfg.r > 256 {
            return Err(bad(format!("rank r = {} (1 to 256 supported)", cfg.r)));
        }
        let names = match cfg.target_modules {
            TargetModules::List(v) => v,
            TargetModules::One(s) => vec![s],
        };
        let targets = names
            .iter()
            .map(|n| {
                Target::from_peft(n).ok_or_else(|| {
                    bad(format!(
                        "target module `{n}` is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let scale = if cfg.use_rslora {
            cfg.lora_alpha / (cfg.r as f64).sqrt()
        } else {
            cfg.lora_alpha / cfg.r as f64
        } as f32;

        let st = SafeTensors::deserialize(safetensors)
            .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
        let by_name: HashMap<String, String> = st
            .names()
            .into_iter()
            .map(|n| (canonical_name(n), n.to_string()))
            .collect();
        let read = |name: &str, rows: usize, cols: usize| -> Result<LoraMatrix> {
            let actual = by_name.get(name).ok_or_else(|| {
                bad(format!(
                    "missing tensor `{name}`: the adapter does not fit this model's layers"
                ))
            })?;
            read_matrix(&st, actual, rows, cols)
        };

        let mut layers = Vec::with_capacity(model.n_layer);
        for i in 0..model.n_layer {
            let mut pairs: [Option<LoraPair>; 7] = Default::default();
            for &t in &targets {
                let (out, inp) = t.shape(model);
                let base = t.peft_prefix(i);
                let a = read(&format!("{base}.lora_A.weight"), cfg.r, inp)?;
                let mut b = read(&format!("{base}.lora_B.weight"), out, cfg.r)?;
                b.scale_by(scale);
                if let Some(heads) = rope_permuted_heads(model, t) {
                    b = b.reorder_rows(&gguf_rope_rows(heads, model.head_dim));
                }
                pairs[t as usize] = Some(LoraPair {
                    a,
                    b,
                    rank: cfg.r,
                    inp,
                    out,
                });
            }
            layers.push(pairs);
        }
        let extra = by_name
            .keys()
            .filter(|n| !n.ends_with(".scale"))
            .filter_map(|n| layer_of(n).filter(|&l| l >= model.n_layer))
            .max();
        if let Some(l) = extra {
            return Err(bad(format!(
                "the adapter has layer {l} but the model has {} layers: it was trained for another model",
                model.n_layer
            )));
        }
        Ok(Adapter {
            rank: cfg.r,
            scale,
            targets,
            layers,
        })
    }

    /// Reads a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, model: &Config) -> Result<Adapter> {
        let config = read_in(dir, "adapter_config.json")?;
        let tensors = read_in(dir, "adapter_model.safetensors")?;
        let json = String::from_utf8(config).map_err(|_| {
            bad(format!(
                "{}/adapter_config.json is not UTF-8",
                dir.display()
            ))
        })?;
        Self::from_peft(&json, &tensors, model)
    }

    /// Checks that this adapter's layers match a model of config `c` (an adapter read
    /// for one model and applied to another is refused).
    pub fn check_fits(&self, c: &Config) -> Result<()> {
        if self.layers.len() != c.n_layer {
            return Err(bad(format!(
                "the adapter has {} layers but the model has {}",
                self.layers.len(),
                c.n_layer
            )));
        }
        for pair in self.layers.iter().flatten().flatten() {
            let fits = Target::ALL
                .iter()
                .any(|t| t.shape(c) == (pair.out, pair.inp));
            if !fits {
                return Err(bad(format!(
                    "an adapter layer is ({}, {}), which no linear layer of this model is",
                    pair.out, pair.inp
                )));
            }
        }
        Ok(())
    }

    /// A seeded random rank-`rank` adapter on every linear layer of a model of config
    /// `c`, scaled so that it moves activations a little: for benchmarks, whose timing
    /// does not depend on the values (never shipped as a trained adapter).
    pub fn random(c: &Config, rank: usize, seed: u64) -> Adapter {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut values = |n: usize, scale: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-scale..scale)).collect()
        };
        let layers = (0..c.n_layer)
            .map(|_| {
                Target::ALL.map(|t| {
                    let (out, inp) = t.shape(c);
                    let a = values(rank * inp, 1.0 / (inp as f32).sqrt());
                    Some(LoraPair::int8(
                        &a,
                        &values(out * rank, 0.01),
                        rank,
                        inp,
                        out,
                    ))
                })
            })
            .collect();
        Adapter {
            rank,
            scale: 1.0,
            targets: Target::ALL.to_vec(),
            layers,
        }
    }

    /// The pair of layer `layer` and target `t`, when the adapter has one.
    pub fn pair(&self, layer: usize, t: Target) -> Option<&LoraPair> {
        self.layers.get(layer)?[t as usize].as_ref()
    }

    /// Bytes of the weights in memory.
    pub fn n_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .flatten()
            .map(LoraPair::n_bytes)
            .sum()
    }
}

/// PEFT names, with the adapter name some versions insert (`lora_A.default.weight`)
/// removed.
fn canonical_name(n: &str) -> String {
    n.replace(".lora_A.default.", ".lora_A.")
        .replace(".lora_B.default.", ".lora_B.")
}

/// The layer index in a PEFT tensor name.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.split(".layers.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// A (rows, cols) tensor: I8 with a per-row `.scale` as it is, F32, F16 or BF16 as f32.
fn read_matrix(st: &SafeTensors, name: &str, rows: usize, cols: usize) -> Result<LoraMatrix> {
    let t = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
    if t.shape() != [rows, cols] {
        return Err(bad(format!(
            "tensor `{name}` has shape {:?}; this model needs [{rows}, {cols}] (wrong rank, or an adapter for another model)",
            t.shape()
        )));
    }
    let d = t.data();
    let halves = |f: fn(u16) -> f32| -> Vec<f32> {
        d.chunks_exact(2)
            .map(|c| f(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    };
    let values = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => halves(|b| f16::from_bits(b).to_f32()),
        Dtype::BF16 => halves(|b| bf16::from_bits(b).to_f32()),
        Dtype::I8 => {
            let scale = read_matrix(st, &format!("{name}.scale"), rows, 1)?.to_f32();
            return Ok(LoraMatrix::Int8(Int8Rows {
                q: d.iter().map(|&b| b as i8).collect(),
                scale,
                cols,
            }));
        }
        other => {
            return Err(bad(format!(
                "tensor `{name}` is {other:?}; adapters must be F32, F16, BF16 or I8 with scales"
            )))
        }
    };
    Ok(LoraMatrix::F32 { values, cols })
}

/// Our INT8 form of an adapter's tensors: for each (rows, cols) f32 matrix, its
/// [`Int8Rows`] as an i8 tensor and a `<name>.scale` f32 (rows, 1) one, as safetensors
/// bytes.
pub fn int8_safetensors(tensors: &[(String, Vec<f32>, usize, usize)]) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, w, rows, cols) in tensors {
        let m = Int8Rows::quantize(w, *cols);
        let q = m.q.iter().map(|&v| v as u8).collect();
        let scales = m.scale.iter().flat_map(|s| s.to_le_bytes()).collect();
        owned.push((name.clone(), Dtype::I8, vec![*rows, *cols], q));
        owned.push((format!("{name}.scale"), Dtype::F32, vec![*rows, 1], scales));
    }
    let views = owned
        .iter()
        .map(|(n, dt, shape, data)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| bad(e.to_string()))
}

/// A PEFT `adapter_model.safetensors` (F32, F16 or BF16) in our INT8 form: the same
/// names and shapes, each matrix as i8 with one f32 scale per row, about a quarter of
/// the f32 bytes. `Adapter::from_peft` reads either.
pub fn int8_peft(safetensors: &[u8]) -> Result<Vec<u8>> {
    let st = SafeTensors::deserialize(safetensors)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let tensors = names
        .iter()
        .filter(|n| !n.ends_with(".scale"))
        .map(|n| {
            let shape = st
                .tensor(n)
                .map_err(|e| bad(e.to_string()))?
                .shape()
                .to_vec();
            let [rows, cols] = shape[..] else {
                return Err(bad(format!(
                    "tensor `{n}` has shape {shape:?}; LoRA matrices are 2-D"
                )));
            };
            Ok((
                canonical_name(n),
                read_matrix(&st, n, rows, cols)?.to_f32(),
                rows,
                cols,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    int8_safetensors(&tensors)
}

/// The bytes of `dir/name`, with the path in the error.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_in(dir: &std::path::Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    #[test]
    fn rows_together_are_rows_alone_and_the_float_product() {
        let mut rng = SmallRng::seed_from_u64(9);
        let (rank, inp, out, m) = (16, 96, 200, 5);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let pair = LoraPair::int8(&random(rank * inp), &random(out * rank), rank, inp, out);
        let (a, b) = (pair.a.to_f32(), pair.b.to_f32());
        let (x, y0) = (random(m * inp), random(m * out));
        let mut together = y0.clone();
        pair.apply(&x, &mut together);
        for i in 0..m {
            let mut alone = y0[i * out..(i + 1) * out].to_vec();
            pair.apply(&x[i * inp..(i + 1) * inp], &mut alone);
            assert_eq!(alone, together[i * out..(i + 1) * out], "row {i}");
            for o in 0..out {
                // y0 + B (A x) in f64.
                let want: f64 = y0[i * out + o] as f64
                    + (0..rank)
                        .map(|j| {
                            let t: f64 = (0..inp)
                                .map(|k| a[j * inp + k] as f64 * x[i * inp + k] as f64)
                                .sum();
                            b[o * rank + j] as f64 * t
                        })
                        .sum::<f64>();
                // |terms| < 1 over 96 x 16 products: f32 rounding stays far below 1e-3.
                let got = together[i * out + o] as f64;
                assert!(
                    (got - want).abs() < 1e-3,
                    "row {i} out {o}: {got} vs {want}"
                );
            }
        }
    }
}
