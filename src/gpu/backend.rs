//! The GPU backend's weights: matrices repacked and uploaded one tensor at a time, split
//! by rows across buffers when one would exceed the device's binding limit.

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use super::lora::GpuLora;
use super::repack::{self, Format, UNIT};
use crate::cpu::Matrix;
use crate::error::{Error, Result};
use crate::model::{Backend, Upload};

/// The GPU backend: weights live in device buffers.
pub struct Gpu;

impl Backend for Gpu {
    type Matrix = GpuMatrix;
    type Vector = GpuVector;
    type Lora = GpuLora;

    fn matrix_bytes(m: &GpuMatrix) -> usize {
        m.bytes as usize
    }

    fn vector_bytes(v: &GpuVector) -> usize {
        v.host.len() * 4
    }
}

/// Uniform `Dims` of matvec.wgsl / embed.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatrixDims {
    pub n_out: u32,
    pub k_units: u32,
    pub y_offset: u32,
    pub y_stride: u32,
    pub has_bias: u32,
    pub _pad: [u32; 3],
}

/// Rows `first_row..first_row + n_rows` of a matrix, in one pair of buffers.
pub struct MatrixPart {
    pub first_row: u32,
    pub n_rows: u32,
    /// (units, quant words)
    pub quants: wgpu::Buffer,
    /// Scale words (a 4-byte placeholder for F32 / F16).
    pub scales: wgpu::Buffer,
    /// [`MatrixDims`] without and with a bias.
    pub dims: [wgpu::Buffer; 2],
}

/// A weight matrix (rows, cols) on the device.
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub format: Format,
    pub parts: Vec<MatrixPart>,
    /// Device bytes of quants and scales.
    pub bytes: u64,
}

/// A vector on the device, with a host copy (vectors are small: norms, biases).
pub struct GpuVector {
    pub buffer: wgpu::Buffer,
    pub host: Vec<f32>,
}

/// Uploads tensors read from a file to `ctx`'s device.
pub struct Uploader<'a> {
    pub ctx: &'a GpuContext,
    /// Device bytes uploaded so far.
    pub bytes: u64,
}

impl<'a> Uploader<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Uploader { ctx, bytes: 0 }
    }

    fn buffer(&mut self, label: &str, words: &[u32], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let placeholder = [0u32];
        let words = if words.is_empty() {
            &placeholder[..]
        } else {
            words
        };
        self.bytes += words.len() as u64 * 4;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(words),
                usage,
            })
    }

    /// A zeroed buffer of `words` words (at least one), filled later by [`Self::write`].
    fn empty_buffer(
        &mut self,
        label: &str,
        words: usize,
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = words.max(1) as u64 * 4;
        self.bytes += size;
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Writes `words` at word `offset` of `buffer` (through the queue: no mapped copy).
    fn write(&self, buffer: &wgpu::Buffer, offset: u64, words: &[u32]) {
        if !words.is_empty() {
            self.ctx
                .queue
                .write_buffer(buffer, offset * 4, bytemuck::cast_slice(words));
        }
    }
}

/// Rows of a matrix are repacked and written this many bytes at a time.
const UPLOAD_SLICE_BYTES: usize = 4 << 20;

impl Upload<Gpu> for Uploader<'_> {
    fn matrix(&mut self, name: &str, m: Matrix) -> Result<GpuMatrix> {
        let format = Format::of(m.ttype, name)?;
        if m.cols % UNIT != 0 {
            return Err(Error::UnsupportedConfig(format!(
                "`{name}` has {} columns; the GPU backend needs a multiple of {UNIT}",
                m.cols
            )));
        }
        let units_per_row = m.cols / UNIT;
        let row_bytes = (units_per_row * format.quant_words() * 4) as u64;
        let limit = self.ctx.max_binding();
        if row_bytes > limit {
            return Err(Error::GpuMemory {
                what: format!("one row of `{name}`"),
                need: row_bytes,
                limit,
            });
        }
        // Split by rows (rows hold whole blocks and Q4_K super-blocks).
        let rows_per_part = ((limit / row_bytes) as usize).min(m.rows).max(1);
        let storage = wgpu::BufferUsages::STORAGE;
        let mut parts = Vec::new();
        let mut first = 0;
        let before = self.bytes;
        let quant_words_per_row = units_per_row * format.quant_words();
        let scale_words_per_row = format.scale_words(units_per_row);
        // Repack and write a few MiB of rows at a time: the repacked copy of a large
        // matrix (the embedding) never sits whole in memory beside the original.
        let rows_per_slice = (UPLOAD_SLICE_BYTES / row_bytes as usize).max(1);
        while first < m.rows {
            let n = rows_per_part.min(m.rows - first);
            let quants = self.empty_buffer(name, n * quant_words_per_row, storage);
            let scales = self.empty_buffer(name, n * scale_words_per_row, storage);
            let mut at = first;
            while at < first + n {
                let end = (at + rows_per_slice).min(first + n);
                let r = repack::repack(&m, at..end, name)?;
                debug_assert_eq!(r.quants.len(), (end - at) * quant_words_per_row);
                debug_assert_eq!(r.scales.len(), (end - at) * scale_words_per_row);
                let row = (at - first) as u64;
                self.write(&quants, row * quant_words_per_row as u64, &r.quants);
                self.write(&scales, row * scale_words_per_row as u64, &r.scales);
                at = end;
            }
            let dims = [0, 1].map(|has_bias| {
                let d = MatrixDims {
                    n_out: n as u32,
                    k_units: units_per_row as u32,
                    y_offset: first as u32,
                    y_stride: m.rows as u32,
                    has_bias,
                    _pad: [0; 3],
                };
                self.ctx
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("matrix dims"),
                        contents: bytemuck::bytes_of(&d),
                        usage: wgpu::BufferUsages::UNIFORM,
                    })
            });
            parts.push(MatrixPart {
                first_row: first as u32,
                n_rows: n as u32,
                quants,
                scales,
                dims,
            });
            first += n;
        }
        // Hand the writes to the device now, so their staging memory is freed per matrix.
        self.ctx.queue.submit([]);
        Ok(GpuMatrix {
            rows: m.rows,
            cols: m.cols,
            format,
            parts,
            bytes: self.bytes - before,
        })
    }

    fn vector(&mut self, name: &str, v: Vec<f32>) -> Result<GpuVector> {
        let words: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        let buffer = self.buffer(name, &words, wgpu::BufferUsages::STORAGE);
        Ok(GpuVector { buffer, host: v })
    }
}
