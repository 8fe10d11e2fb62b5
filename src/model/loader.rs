//! "Give me tensor by name": reading weights from a file or from bytes already in
//! memory through one interface, checking names and shapes against the config.

use std::io::{Read, Seek, SeekFrom};

use super::Linear;
use crate::cpu::{Cpu, Matrix};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo, TensorType};

/// Where tensor bytes come from.
pub trait TensorSource {
    /// The `info.n_bytes` bytes at `info.offset`.
    fn read(&mut self, info: &TensorInfo) -> Result<Vec<u8>>;

    /// The same bytes, into `out` (`info.n_bytes` long): a source that can read in place
    /// overrides this so a tensor is never held twice.
    fn read_into(&mut self, info: &TensorInfo, out: &mut [u8]) -> Result<()> {
        out.copy_from_slice(&self.read(info)?);
        Ok(())
    }
}

/// A whole GGUF file already in memory.
pub struct BytesSource<'a>(pub &'a [u8]);

impl TensorSource for BytesSource<'_> {
    fn read(&mut self, info: &TensorInfo) -> Result<Vec<u8>> {
        let r = info.byte_range();
        self.0
            .get(r.start as usize..r.end as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Truncated {
                what: format!("the data of tensor `{}`", info.name),
                start: r.start,
                end: r.end,
                available: self.0.len() as u64,
            })
    }
}

/// A GGUF file on disk, read tensor by tensor.
pub struct FileSource {
    pub file: std::fs::File,
}

impl FileSource {
    /// Opens the GGUF file at `path` (its header is read separately).
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(FileSource { file })
    }
}

impl TensorSource for FileSource {
    fn read(&mut self, info: &TensorInfo) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; info.n_bytes as usize];
        self.read_into(info, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&mut self, info: &TensorInfo, out: &mut [u8]) -> Result<()> {
        let what = || format!("reading tensor `{}`", info.name);
        self.file
            .seek(SeekFrom::Start(info.offset))
            .map_err(|e| Error::io(what(), e))?;
        self.file.read_exact(out).map_err(|e| Error::io(what(), e))
    }
}

/// Reads named tensors and checks them against the shapes the config implies.
pub(super) struct Loader<'a> {
    gguf: &'a Gguf,
    source: &'a mut dyn TensorSource,
    arch: &'static str,
}

impl<'a> Loader<'a> {
    pub fn new(gguf: &'a Gguf, source: &'a mut dyn TensorSource, arch: &'static str) -> Self {
        Loader { gguf, source, arch }
    }

    fn info(&self, name: &str, expected_dims: &[usize]) -> Result<&'a TensorInfo> {
        let info = self.gguf.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            arch: self.arch.to_string(),
        })?;
        let found: Vec<usize> = info.dims.iter().map(|&v| v as usize).collect();
        if found != expected_dims {
            return Err(Error::TensorShape {
                name: name.to_string(),
                found,
                expected: expected_dims.to_vec(),
            });
        }
        Ok(info)
    }

    /// A (rows, cols) matrix; GGUF stores it with dims `[cols, rows]`.
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let info = self.info(name, &[cols, rows])?;
        let mut m = Matrix::zeroed(info.ttype, rows, cols)?;
        let out = m.raw_bytes_mut();
        if out.len() as u64 != info.n_bytes {
            return Err(Error::Corrupt(format!(
                "tensor `{name}` holds {} bytes; a {} matrix of {rows}x{cols} needs {}",
                info.n_bytes,
                info.ttype,
                out.len()
            )));
        }
        self.source.read_into(info, out)?;
        Ok(m)
    }

    /// A vector of `len` floats (stored as F32, F16 or BF16).
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.info(name, &[len])?;
        let ttype = info.ttype;
        if !matches!(ttype, TensorType::F32 | TensorType::F16 | TensorType::BF16) {
            return Err(Error::UnsupportedConfig(format!(
                "vector `{name}` is stored as {ttype}; expected F32, F16 or BF16"
            )));
        }
        let bytes = self.source.read(info)?;
        let m = Matrix::from_bytes(ttype, 1, len, &bytes)?;
        let mut out = vec![0f32; len];
        m.row_to_f32(0, &mut out);
        Ok(out)
    }

    /// `{prefix}.weight` (out, in) and, when `bias`, `{prefix}.bias` (out).
    pub fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear<Cpu>> {
        let weight = self.matrix(&format!("{prefix}.weight"), out, inp)?;
        let bias_name = format!("{prefix}.bias");
        let bias = if bias || self.gguf.tensor(&bias_name).is_some() {
            Some(self.vector(&bias_name, out)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}
