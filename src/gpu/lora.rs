//! LoRA adapters on the device: each targeted layer's `A` (rank, in) and scaled `B`
//! (out, rank) in f32 buffers, applied after the layer's INT4 matvec by two thin
//! kernels (lora_down.wgsl, lora_up.wgsl) over the rows whose `lora` flag is set, so
//! one batched step can mix candidates with the adapter on and off.

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use crate::error::{Error, Result};
use crate::lora::{Adapter, LoraPair};
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
    /// (rank, in)
    pub a: wgpu::Buffer,
    /// (out, rank), scaled.
    pub b: wgpu::Buffer,
    /// [`LoraDims`]
    pub dims: wgpu::Buffer,
    pub rank: usize,
    pub inp: usize,
    pub out: usize,
}

/// An adapter on the device: `layers[i][t as usize]` as in [`Adapter`].
pub struct GpuAdapter {
    pub layers: Vec<[Option<GpuLora>; 7]>,
    /// Device bytes of every A and B.
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
            let buffer = |label: &str, v: &[f32]| {
                ctx.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::cast_slice(v),
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            };
            bytes += ((p.a.len() + p.b.len()) * 4) as u64;
            let dims = LoraDims {
                inp: p.inp as u32,
                out: p.out as u32,
                rank: p.rank as u32,
                _pad: 0,
            };
            GpuLora {
                a: buffer("lora A", &p.a),
                b: buffer("lora B", &p.b),
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
