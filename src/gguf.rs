//! GGUF v2/v3: header, metadata and tensor directory.
//!
//! The parser works on a byte prefix of the file (the header) plus the file's total
//! length, so a caller streaming from browser storage can parse the directory first and
//! then fetch each tensor's byte range on its own. It never trusts a length field: every
//! count is checked against the bytes that remain before anything is allocated.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The four magic bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors have at most this many dimensions in GGUF.
const MAX_DIMS: u32 = 4;
/// [`Gguf::read_header`] starts with this many bytes (SmolLM2's header, with 49k tokens
/// and merges, is about 2 MiB).
const FIRST_PREFIX: u64 = 1 << 20;

/// The largest header [`Gguf::read_header`] reads: real headers, vocabularies included,
/// take a few MiB (Gemma 3's 262,144 tokens: about 6 MiB).
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Memory the parsed metadata may take (each value is a [`Value`], strings add their
/// bytes): Gemma 3's vocabulary takes about 25 MiB. A header whose arrays declare more
/// (say ten million one-byte items, 32 bytes each once parsed) is refused before it is
/// built.
pub const MAX_METADATA_BYTES: u64 = 96 << 20;

/// Storage type of a tensor, with the ggml type ids used in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl TensorType {
    /// Maps a ggml type id; `None` for ids edge-reason does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Elements per block (1 for plain floats).
    pub fn block_len(self) -> u64 {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// The name llama.cpp prints for this type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ttype: TensorType,
    /// Dimensions in ggml order: `dims[0]` is the innermost (contiguous) one, so a
    /// linear layer's weight is `[in_features, out_features]`.
    pub dims: Vec<u64>,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    /// Size of the tensor's data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The byte range of the tensor's data in the file.
    pub fn byte_range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.n_bytes
    }
}

/// A parsed GGUF header: metadata and the tensor directory.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset where tensor data starts.
    pub data_offset: u64,
    /// Total file length the directory was checked against.
    pub file_len: u64,
}

impl Gguf {
    /// Parses the header from the whole file's bytes.
    pub fn parse(file: &[u8]) -> Result<Self> {
        Self::parse_prefix(file, file.len() as u64)
    }

    /// Parses the header from `prefix` (the first bytes of a file of `file_len` bytes).
    /// Fails with [`Error::Truncated`] when the prefix ends inside the header; a
    /// streaming caller may then retry with a longer prefix.
    pub fn parse_prefix(prefix: &[u8], file_len: u64) -> Result<Self> {
        let mut r = Reader {
            buf: prefix,
            pos: 0,
            file_len,
            budget: MAX_METADATA_BYTES,
        };
        let magic: [u8; 4] = r.bytes(4, "magic")?.try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Each metadata entry takes at least 8 (key length) + 4 (type) bytes and each
        // tensor entry at least 8 + 4 + 4 + 8: bound the counts before allocating.
        r.check_count(n_kv, 12, "metadata count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let vtype = r.u32("metadata value type")?;
            let value = r.value(vtype, &key, 0)?;
            metadata.insert(key, value);
        }

        r.check_count(n_tensors, 24, "tensor count")?;
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::Corrupt(format!(
                    "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let type_id = r.u32("tensor type")?;
            let rel_offset = r.u64("tensor offset")?;
            raw.push((name, dims, type_id, rel_offset));
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(Error::Corrupt(format!(
                        "general.alignment is {v:?}, not a power of two"
                    )))
                }
            },
        };
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, type_id, rel_offset) in raw {
            let info = tensor_info(name, dims, type_id, rel_offset, data_offset, alignment)?;
            if info.offset.saturating_add(info.n_bytes) > file_len {
                return Err(Error::Truncated {
                    what: format!("the data of tensor `{}`", info.name),
                    start: info.offset,
                    end: info.offset.saturating_add(info.n_bytes),
                    available: file_len,
                });
            }
            tensors.push(info);
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            data_offset,
            file_len,
        })
    }

    /// Parses the header of a file of `file_len` bytes that `read_at(offset, buf)` fills
    /// piece by piece (a file on disk, browser storage): from the first 1 MiB, growing
    /// the prefix (doubling, or as far as the parser says it needs) until the header
    /// fits; tensor data is never read. A header that needs bytes past the end of the
    /// file is the parser's own [`Error::Truncated`].
    pub fn read_header(
        file_len: u64,
        mut read_at: impl FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let mut prefix = Vec::new();
        let mut want = FIRST_PREFIX.min(file_len);
        loop {
            let have = prefix.len();
            prefix.resize(want as usize, 0);
            read_at(have as u64, &mut prefix[have..])?;
            match Self::parse_prefix(&prefix, file_len) {
                Err(Error::Truncated { end, .. }) if want < file_len && end <= file_len => {
                    if end > MAX_HEADER_BYTES {
                        return Err(Error::Corrupt(format!(
                            "the GGUF header runs past {} MiB (to byte {end}): not a model this engine loads",
                            MAX_HEADER_BYTES >> 20
                        )));
                    }
                    want = want
                        .saturating_mul(2)
                        .max(end)
                        .min(file_len)
                        .min(MAX_HEADER_BYTES);
                }
                other => return other,
            }
        }
    }

    /// Looks up a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata value, or `None` when absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| type_error(key, "an unsigned integer", v))
    }

    /// A required float (integers are accepted).
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| type_error(key, "a number", v))
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(type_error(key, "a string", v)),
        }
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.require(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    v => Err(type_error(key, "an array of strings", v)),
                })
                .collect(),
            v => Err(type_error(key, "an array of strings", v)),
        }
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::MissingMetadata(key.to_string()))
    }
}

fn type_error(key: &str, expected: &'static str, v: &Value) -> Error {
    Error::MetadataType {
        key: key.to_string(),
        expected,
        found: v.type_name().to_string(),
    }
}

fn tensor_info(
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    rel_offset: u64,
    data_offset: u64,
    alignment: u64,
) -> Result<TensorInfo> {
    let ttype = TensorType::from_id(type_id).ok_or_else(|| Error::UnknownTensorType {
        name: name.clone(),
        type_id,
    })?;
    let mut n_elements: u64 = 1;
    for &d in &dims {
        if d == 0 {
            return Err(Error::Corrupt(format!(
                "tensor `{name}` has a zero dimension {dims:?}"
            )));
        }
        n_elements = n_elements.checked_mul(d).ok_or_else(|| {
            Error::Corrupt(format!("tensor `{name}` dimensions {dims:?} overflow"))
        })?;
    }
    if dims[0] % ttype.block_len() != 0 {
        return Err(Error::Corrupt(format!(
            "tensor `{name}` of type {ttype} has a row of {} elements, not a multiple of its block of {}",
            dims[0],
            ttype.block_len()
        )));
    }
    let n_bytes = (n_elements / ttype.block_len())
        .checked_mul(ttype.block_bytes())
        .ok_or_else(|| Error::Corrupt(format!("tensor `{name}` size overflows")))?;
    if rel_offset % alignment != 0 {
        return Err(Error::Corrupt(format!(
            "tensor `{name}` offset {rel_offset} is not aligned to {alignment}"
        )));
    }
    let offset = data_offset
        .checked_add(rel_offset)
        .ok_or_else(|| Error::Corrupt(format!("tensor `{name}` offset overflows")))?;
    Ok(TensorInfo {
        name,
        ttype,
        dims,
        offset,
        n_bytes,
    })
}

/// A bounds-checked little-endian cursor over the header bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    /// Bytes of parsed metadata still allowed (see [`MAX_METADATA_BYTES`]).
    budget: u64,
}

/// Nesting depth allowed for arrays of arrays.
const MAX_ARRAY_DEPTH: u32 = 4;

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: what.to_string(),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(n),
                available: (self.buf.len() as u64).min(self.file_len),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Fails when `count` items of at least `min_bytes` each cannot fit in what remains.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<()> {
        if count.saturating_mul(min_bytes) > self.remaining() {
            return Err(Error::Truncated {
                what: format!("{what} {count}"),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(count.saturating_mul(min_bytes)),
                available: self.buf.len() as u64,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.bytes(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Takes `n` bytes of the metadata budget for `what`.
    fn spend(&mut self, n: u64, what: &str) -> Result<()> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            Error::Corrupt(format!(
                "the metadata needs more than {} MiB once parsed (at {what}): not a model this engine loads",
                MAX_METADATA_BYTES >> 20
            ))
        })?;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.bytes(len, what)?;
        self.spend(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Corrupt(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, vtype: u32, key: &str, depth: u32) -> Result<Value> {
        let what = format!("value of `{key}`");
        Ok(match vtype {
            0 => Value::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::Corrupt(format!(
                        "`{key}` is a bool with byte value {b}"
                    )))
                }
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::Corrupt(format!("`{key}` nests arrays too deeply")));
                }
                let item_type = self.u32(&what)?;
                let len = self.u64(&what)?;
                let min_item = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => 1,
                };
                self.check_count(len, min_item, &what)?;
                self.spend(
                    len.saturating_mul(std::mem::size_of::<Value>() as u64),
                    &what,
                )?;
                // Reserve what the budget allows at most; the bytes read bound the rest.
                let mut items = Vec::with_capacity(len.min(1 << 16) as usize);
                for _ in 0..len {
                    items.push(self.value(item_type, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            t => {
                return Err(Error::Corrupt(format!(
                    "`{key}` has unknown metadata type {t}"
                )))
            }
        })
    }
}
