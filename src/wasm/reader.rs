//! A GGUF file read piece by piece through a JS object, so that neither heap ever holds
//! the whole model: the worker hands in an OPFS sync access handle wrapped as
//! `{ size, readInto(offset, target) }`, and tensors are read straight into wasm memory
//! one at a time.

use js_sys::{Function, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use super::js::describe_error;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::model::TensorSource;

#[wasm_bindgen(typescript_custom_section)]
const TS_READER: &'static str = r#"
/** Random access to a file, synchronous (an OPFS sync access handle in a worker). */
export interface ByteReader {
  /** The file's length in bytes. */
  readonly size: number;
  /** Fills `target` with the bytes at `offset`; returns how many were read. */
  readInto(offset: number, target: Uint8Array): number;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The JS side of [`ByteReader`] (see the TypeScript declaration above).
    #[wasm_bindgen(typescript_type = "ByteReader")]
    pub type JsReader;

    #[wasm_bindgen(method, getter)]
    fn size(this: &JsReader) -> f64;

    #[wasm_bindgen(method, catch, js_name = readInto)]
    fn read_into(
        this: &JsReader,
        offset: f64,
        target: &Uint8Array,
    ) -> std::result::Result<f64, JsValue>;
}

/// Hashing reads this much at a time.
const HASH_PIECE: usize = 8 << 20;

/// A [`JsReader`] as a [`TensorSource`].
pub struct ReaderSource<'a> {
    reader: &'a JsReader,
    size: u64,
}

impl<'a> ReaderSource<'a> {
    pub fn new(reader: &'a JsReader) -> Result<Self> {
        let size = reader.size();
        if !(size.is_finite() && size >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "the reader's size is {size}; expected a byte count"
            )));
        }
        Ok(ReaderSource {
            reader,
            size: size as u64,
        })
    }

    /// Fills `buf` with the bytes at `offset`, straight from JS into wasm memory.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(Error::Truncated {
                what: what.to_string(),
                start: offset,
                end,
                available: self.size,
            });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: the view covers `rest`, which outlives the call; readInto only
            // writes into the view and allocates nothing in wasm memory, so the memory
            // cannot grow (and detach the view) while the view is alive.
            let view = unsafe { Uint8Array::view_mut_raw(rest.as_mut_ptr(), rest.len()) };
            let n = self
                .reader
                .read_into((offset + done as u64) as f64, &view)
                .map_err(|e| {
                    Error::io(
                        format!("reading {what} from storage"),
                        std::io::Error::other(describe_error(&e)),
                    )
                })?;
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::Truncated {
                    what: what.to_string(),
                    start: offset,
                    end,
                    available: offset + done as u64,
                });
            }
            done += (n as usize).min(rest.len());
        }
        Ok(())
    }

    /// Parses the GGUF header ([`Gguf::read_header`]: the smallest prefix that holds it).
    pub fn header(&self) -> Result<Gguf> {
        Gguf::read_header(self.size, |offset, buf| {
            self.read_exact_at(offset, buf, "the GGUF header")
        })
    }

    /// The SHA-256 of the whole file, lowercase hex, calling `on_progress(bytes hashed)`
    /// after each piece.
    pub fn sha256(&self, on_progress: Option<&Function>) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut piece = vec![0u8; HASH_PIECE.min(self.size as usize)];
        let mut at = 0u64;
        while at < self.size {
            let n = (self.size - at).min(piece.len() as u64) as usize;
            self.read_exact_at(at, &mut piece[..n], "the file")?;
            hasher.update(&piece[..n]);
            at += n as u64;
            if let Some(f) = on_progress {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_f64(at as f64));
            }
        }
        Ok(hex(&hasher.finalize()))
    }
}

impl TensorSource for ReaderSource<'_> {
    fn read(&mut self, info: &TensorInfo) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; info.n_bytes as usize];
        self.read_into(info, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&mut self, info: &TensorInfo, out: &mut [u8]) -> Result<()> {
        self.read_exact_at(
            info.offset,
            out,
            &format!("the data of tensor `{}`", info.name),
        )
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
