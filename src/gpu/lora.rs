//! LoRA adapters on the device: each targeted layer's `A` (rank, in) and scaled `B`
//! (out, rank) in the form they have in memory ([`LoraMatrix`]): a buffer of `u32`
//! words (INT8: four i8 to a word, each row padded to whole words; f32: the values'
//! bits) and one of f32 row scales (ones for f32), applied after the layer's INT4
//! matvec by two thin kernels (lora_down.wgsl, lora_up.wgsl) over the rows whose `lora`
//! flag is set, so one batched step can mix candidates with the adapter on and off.

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use crate::error::{Error, Result};
use crate::lora::{Adapter, LoraMatrix, LoraPair};
use crate::model::Config;

/// Largest rank the kernels take (the width of the session's `t` scratch rows).
pub const MAX_GPU_RANK: usize = 64;

/// lora_down.wgsl / lora_up.wgsl's `LoraDims`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LoraDims {
    inp: u32,
    out: u32,
    rank: u32,
    _pad: u32,
}

/// The update of one linear layer on the device.
pub struct GpuLora {
    /// (rank, in): see [`words`]
    pub a: wgpu::Buffer,
    /// (rank,) f32
    pub a_scale: wgpu::Buffer,
    /// (out, rank): see [`words`]
    pub b: wgpu::Buffer,
    /// (out,) f32
    pub b_scale: wgpu::Buffer,
    /// Whether `a` and `b` are INT8 (else f32): the kernels' `INT8` constant.
    pub int8: [bool; 2],
    /// [`LoraDims`]
    pub dims: wgpu::Buffer,
    pub rank: usize,
    pub inp: usize,
    pub out: usize,
}

/// An adapter on the device: `layers[i][t as usize]` as in [`Adapter`].
pub struct GpuAdapter {
    pub layers: Vec<[Option<GpuLora>; 7]>,
    /// Device bytes of every A and B, scales included.
    pub bytes: u64,
}

impl GpuAdapter {
    /// Uploads `adapter` (checked against `config`) to `ctx`'s device.
    pub fn upload(ctx: &GpuContext, adapter: &Adapter, config: &Config) -> Result<Self> {
        adapter.check_fits(config)?;
        if adapter.rank > MAX_GPU_RANK {
            return Err(Error::Adapter(format!(
                "rank {} is above the GPU backend's {MAX_GPU_RANK}: train a smaller adapter \
                 or run it on the CPU backend",
                adapter.rank
            )));
        }
        let mut bytes = 0;
        let mut upload = |p: &LoraPair| {
            let mut buffer = |label: &str, contents: &[u8]| {
                bytes += contents.len() as u64;
                ctx.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents,
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            };
            // A matrix's words and row scales, each in a buffer.
            let mut matrix = |m: &LoraMatrix, labels: [&str; 2]| {
                let (words, scales) = words(m);
                (
                    buffer(labels[0], bytemuck::cast_slice(&words)),
                    buffer(labels[1], bytemuck::cast_slice(&scales)),
                )
            };
            let (a, a_scale) = matrix(&p.a, ["lora A", "lora A scales"]);
            let (b, b_scale) = matrix(&p.b, ["lora B", "lora B scales"]);
            let int8 = [&p.a, &p.b].map(|m| matches!(m, LoraMatrix::Int8(_)));
            let dims = LoraDims {
                inp: p.inp as u32,
                out: p.out as u32,
                rank: p.rank as u32,
                _pad: 0,
            };
            GpuLora {
                a,
                a_scale,
                b,
                b_scale,
                int8,
                dims: ctx
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("lora dims"),
                        contents: bytemuck::bytes_of(&dims),
                        usage: wgpu::BufferUsages::UNIFORM,
                    }),
                rank: p.rank,
                inp: p.inp,
                out: p.out,
            }
        };
        let layers = adapter
            .layers
            .iter()
            .map(|targets| targets.each_ref().map(|p| p.as_ref().map(&mut upload)))
            .collect();
        Ok(GpuAdapter { layers, bytes })
    }
}

/// `m` as the kernels read it: `u32` words and one f32 scale per row. INT8 rows go four
/// values to a word (little-endian, each row padded with zeros to whole words) with
/// their scales; f32 values one to a word (their bits), with scales of one.
fn words(m: &LoraMatrix) -> (Vec<u32>, Vec<f32>) {
    match m {
        LoraMatrix::F32 { values, .. } => (
            values.iter().map(|v| v.to_bits()).collect(),
            vec![1.0; m.rows()],
        ),
        LoraMatrix::Int8(m) => {
            let per_row = m.cols.div_ceil(4);
            let mut out = vec![0u32; m.rows() * per_row];
            for (j, row) in m.q.chunks_exact(m.cols).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    out[j * per_row + k / 4] |= (v as u8 as u32) << (8 * (k % 4));
                }
            }
            (out, m.scale.clone())
        }
    }
}
