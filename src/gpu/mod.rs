//! The WebGPU backend (wgpu: WebGPU in the browser, Vulkan/Metal/DX12 natively): our own
//! WGSL kernels for every op of the forward pass, run by the same transformer as the
//! CPU backend ([`crate::model::Model::run`]).
//!
//! - [`context`]: adapter, device, limits, readback.
//! - [`repack`]: GGUF blocks into the GPU's aligned layout (nibbles and scales apart).
//! - [`backend`]: weights on the device, uploaded one tensor at a time.
//! - [`kernels`]: the `.wgsl` files and the pipeline cache.
//! - [`lora`]: LoRA adapters on the device.
//! - [`profile`]: per-kernel GPU time of a pass, from timestamp queries.
//! - [`session`]: KV cache, activations, step buffers, and the recorded forward pass.

pub mod backend;
pub mod context;
pub mod kernels;
pub mod lora;
pub mod profile;
pub mod repack;
pub mod session;

pub use backend::{Gpu, GpuMatrix, GpuVector, Uploader};
pub use context::{AdapterSummary, GpuContext};
pub use lora::{GpuAdapter, GpuLora, MAX_GPU_RANK};
pub use profile::{ProfileReport, Profiler};
pub use session::{GpuSession, PassOptions, Row, MAX_ROWS, MAX_STREAMS};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::model::{Logits, Model, TensorSource};
use crate::sampler::{Draw, Sampler};
use kernels::Kernels;
pub use kernels::{KvPrecision, KvStore};

/// A model whose weights live on a GPU.
pub struct GpuModel {
    pub ctx: GpuContext,
    pub kernels: Kernels,
    pub model: Model<Gpu>,
    /// Device bytes of the weights.
    pub weight_bytes: u64,
    /// How the KV caches of sessions made from now on hold their values: f16 by
    /// default ([`GpuModel::set_kv_precision`] chooses; tests may set
    /// [`KvStore::F16Packed`] to force the path of adapters without `shader-f16`).
    pub kv_store: KvStore,
}

impl GpuModel {
    /// Reads the weights named by `gguf` from `source` and uploads them to `ctx`'s
    /// device one tensor at a time. Device memory exhaustion is a clear error.
    pub async fn load(ctx: GpuContext, gguf: &Gguf, source: &mut dyn TensorSource) -> Result<Self> {
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut up = Uploader::new(&ctx);
        let model = Model::load_with(gguf, source, &mut up);
        let weight_bytes = up.bytes;
        if let Some(e) = oom.pop().await {
            return Err(Error::GpuMemory {
                what: format!("the weights ({e})"),
                need: weight_bytes,
                limit: 0,
            });
        }
        let model = model?;
        let kernels = Kernels::new(&ctx);
        Ok(GpuModel {
            ctx,
            kv_store: kernels.kv_store(KvPrecision::F16),
            kernels,
            model,
            weight_bytes,
        })
    }

    /// [`GpuModel::load`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_blocking(
        ctx: GpuContext,
        gguf: &Gguf,
        source: &mut dyn TensorSource,
    ) -> Result<Self> {
        pollster::block_on(Self::load(ctx, gguf, source))
    }

    /// The precision of the KV caches of sessions made from now on.
    pub fn set_kv_precision(&mut self, precision: KvPrecision) {
        self.kv_store = self.kernels.kv_store(precision);
    }

    /// A session for one sequence of up to `capacity` tokens.
    pub fn session(&self, capacity: usize) -> Result<GpuSession> {
        GpuSession::new(self, capacity, 0, 0)
    }
}

/// One sequence on the GPU, for the engine's generation loop.
pub struct GpuSequence<'a> {
    pub gm: &'a GpuModel,
    pub session: GpuSession,
    pub capacity: usize,
}

impl GpuSequence<'_> {
    /// Appends `tokens` and reads back the one token the GPU picks by `draw`.
    async fn feed_picked(&mut self, tokens: &[u32], draw: Draw) -> Result<u32> {
        self.gm
            .append(&mut self.session, tokens, Logits::Last, &[draw])?;
        Ok(self.gm.read_ids(&self.session).await?[0])
    }
}

impl crate::engine::Sequence for GpuSequence<'_> {
    async fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.gm
            .append(&mut self.session, tokens, Logits::Last, &[])?;
        self.gm.read_logits(&self.session).await
    }

    async fn feed_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        self.feed_picked(tokens, Draw::GREEDY).await
    }

    /// Samples on the GPU (reading back one id) when the sampler's settings allow it,
    /// else from the read-back logits.
    async fn feed_sampled(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        match sampler.device_draw() {
            Some(draw) => self.feed_picked(tokens, draw).await,
            None => Ok(sampler.sample(&mut self.feed(tokens).await?, history)),
        }
    }

    fn room(&self) -> usize {
        self.capacity - self.session.main_len()
    }
}
