//! Makes the default model's Q4_K_M, Q5_K_M, Q6_K and Q8_0 files that the tests and
//! benchmarks run, without llama.cpp (which CI does not build): each tensor is
//! dequantized and quantized again, by candle's ports of ggml's reference quantizers, to
//! the type llama.cpp's quantizer gave it in that file type, and its bytes are checked
//! against the SHA-256 the recipe records (`tests/fixtures/smollm2_quants.json`).
//!
//! The recipe comes from `tests/fixtures/make_quant_fixtures.py`, which takes the tensor
//! types from llama.cpp's own quantizer, runs this with `--unchecked` to write the files,
//! and records llama.cpp's logits on exactly these files. Q5_0, Q5_1 and Q8_0 tensors
//! come out byte-identical to llama.cpp's quantizer; the K-quants' differ (candle ports an
//! older version of ggml's search for scales), which the recipe notes per tensor.
//!
//!     cargo run --release --example requantize -- \
//!         --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!         --recipe tests/fixtures/smollm2_quants.json --out models/derived

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::quantized::k_quants::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
};
use edge_reason::cpu::Matrix;
use edge_reason::gguf::{Gguf, TensorInfo, TensorType, Value};
use rayon::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Recipe {
    formats: Vec<Format>,
}

#[derive(Deserialize)]
struct Format {
    /// "Q4_K_M", ...
    name: String,
    /// llama.cpp's `general.file_type` for it.
    file_type: u32,
    /// The file to write, under `--out`.
    file: String,
    tensors: Vec<TensorRecipe>,
}

#[derive(Deserialize)]
struct TensorRecipe {
    name: String,
    #[serde(rename = "type")]
    ttype: String,
    /// SHA-256 of the tensor's data as this program writes it.
    sha256: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("requantize: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut recipe, mut out, mut checked) = (None, None, None, true);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--recipe" => recipe = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--unchecked" => checked = false,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let (model, recipe, out) = (
        model.ok_or("--model is required")?,
        recipe.ok_or("--recipe is required")?,
        out.ok_or("--out is required")?,
    );
    let recipe: Recipe = serde_json::from_slice(
        &std::fs::read(&recipe).map_err(|e| format!("{}: {e}", recipe.display()))?,
    )
    .map_err(|e| format!("the recipe: {e}"))?;
    let bytes = std::fs::read(&model).map_err(|e| format!("{}: {e}", model.display()))?;
    let gguf = Gguf::parse(&bytes).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for format in &recipe.formats {
        let t0 = std::time::Instant::now();
        let file = requantize(&gguf, &bytes, format, checked)?;
        let path = out.join(&format.file);
        std::fs::write(&path, file).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "requantize: {} ({} tensors{}) in {:.1} s",
            path.display(),
            format.tensors.len(),
            if checked {
                ", each as the recipe's SHA-256 says"
            } else {
                ", unchecked"
            },
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The GGUF file of `format`: the source's metadata (with llama.cpp's file type) and each
/// tensor, in llama.cpp's order, in the recipe's type; `checked`: each tensor's bytes have
/// the recipe's SHA-256.
fn requantize(
    gguf: &Gguf,
    bytes: &[u8],
    format: &Format,
    checked: bool,
) -> Result<Vec<u8>, String> {
    if format.tensors.len() != gguf.tensors.len() {
        return Err(format!(
            "{}: the recipe has {} tensors, the model {}",
            format.name,
            format.tensors.len(),
            gguf.tensors.len()
        ));
    }
    let tensors: Vec<(&TensorInfo, TensorType, Vec<u8>)> = format
        .tensors
        .par_iter()
        .map(|want| {
            let info = gguf.tensor(&want.name).ok_or(format!(
                "the recipe names {}, which the model lacks",
                want.name
            ))?;
            let ttype = type_named(&want.ttype)?;
            let src = &bytes[info.offset as usize..][..info.n_bytes as usize];
            let data = if ttype == info.ttype {
                src.to_vec()
            } else {
                let cols = info.dims[0] as usize;
                let rows = (info.n_elements() / info.dims[0]) as usize;
                let m =
                    Matrix::from_bytes(info.ttype, rows, cols, src).map_err(|e| e.to_string())?;
                let mut values = vec![0f32; rows * cols];
                for (r, row) in values.chunks_exact_mut(cols).enumerate() {
                    m.row_to_f32(r, row);
                }
                quantize(ttype, &values)?
            };
            let got = hex(&Sha256::digest(&data));
            if checked && Some(&got) != want.sha256.as_ref() {
                return Err(format!(
                    "{}: tensor {} as {ttype} has SHA-256 {got}, the recipe says {:?}",
                    format.name, info.name, want.sha256
                ));
            }
            Ok((info, ttype, data))
        })
        .collect::<Result<_, _>>()?;
    let mut metadata = gguf.metadata.clone();
    metadata.insert("general.file_type".into(), Value::U32(format.file_type));
    Ok(write_gguf(&metadata, &tensors))
}

fn type_named(name: &str) -> Result<TensorType, String> {
    (0..64)
        .filter_map(TensorType::from_id)
        .find(|t| t.name() == name)
        .ok_or(format!("unknown tensor type {name}"))
}

/// `values` quantized to `ttype` by candle (ggml's reference quantizers), as bytes.
fn quantize(ttype: TensorType, values: &[f32]) -> Result<Vec<u8>, String> {
    fn blocks<T: GgmlType>(x: &[f32]) -> Vec<u8> {
        let mut b = vec![T::zeros(); x.len() / T::BLCK_SIZE];
        T::from_float(x, &mut b);
        // SAFETY: candle's blocks are repr(C) plain data, byte-identical to ggml's.
        unsafe {
            std::slice::from_raw_parts(b.as_ptr() as *const u8, std::mem::size_of_val(b.as_slice()))
        }
        .to_vec()
    }
    Ok(match ttype {
        TensorType::Q4_0 => blocks::<BlockQ4_0>(values),
        TensorType::Q4_1 => blocks::<BlockQ4_1>(values),
        TensorType::Q5_0 => blocks::<BlockQ5_0>(values),
        TensorType::Q5_1 => blocks::<BlockQ5_1>(values),
        TensorType::Q8_0 => blocks::<BlockQ8_0>(values),
        TensorType::Q4K => blocks::<BlockQ4K>(values),
        TensorType::Q5K => blocks::<BlockQ5K>(values),
        TensorType::Q6K => blocks::<BlockQ6K>(values),
        other => return Err(format!("no quantizer for {other}")),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A GGUF v3 file of `metadata` and `tensors` (each its source's name and dims, its
/// type and data), data aligned as the metadata says.
fn write_gguf(
    metadata: &BTreeMap<String, Value>,
    tensors: &[(&TensorInfo, TensorType, Vec<u8>)],
) -> Vec<u8> {
    let alignment = metadata
        .get("general.alignment")
        .and_then(Value::as_u64)
        .unwrap_or(32) as usize;
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        out.extend(type_id(value).to_le_bytes());
        put_value(&mut out, value);
    }
    let mut offset = 0usize;
    for (info, ttype, data) in tensors {
        put_str(&mut out, &info.name);
        out.extend((info.dims.len() as u32).to_le_bytes());
        for d in &info.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ggml_id(*ttype).to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += data.len().div_ceil(alignment) * alignment;
    }
    out.resize(out.len().div_ceil(alignment) * alignment, 0);
    for (_, _, data) in tensors {
        out.extend(data);
        out.resize(out.len().div_ceil(alignment) * alignment, 0);
    }
    out
}

fn ggml_id(t: TensorType) -> u32 {
    (0..64)
        .find(|&id| TensorType::from_id(id) == Some(t))
        .expect("a known type")
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// GGUF's value type ids.
fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            // An empty array's element type is not kept by the parser; u8 reads the same.
            out.extend(items.first().map_or(0, type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
