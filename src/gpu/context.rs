//! The WebGPU device: adapter choice, features, limits, and reading buffers back.

use crate::error::{Error, Result};

/// What a user needs to know about the adapter a model runs on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// "vulkan", "metal", "dx12", "browser-webgpu", ...
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// Whether the kernels use WGSL subgroup operations (offered by the adapter, with
    /// a smallest subgroup of at least 4). Set it to false before loading a model to
    /// force the fallback kernels.
    pub subgroups: bool,
    /// The adapter's smallest subgroup size (0 when unknown).
    pub subgroup_min_size: u32,
    /// Whether the adapter offers `shader-f16`.
    pub shader_f16: bool,
    /// Whether the adapter offers timestamp queries (used only to profile).
    pub timestamps: bool,
    /// Whether the adapter runs on the CPU (lavapipe; SwiftShader, Chrome's WebGPU
    /// fallback, which a page knows only by name). The kernels take shapes that suit a
    /// CPU; set it to false before loading a model to force the GPU shapes.
    pub software: bool,
}

impl AdapterSummary {
    /// Its name and API, e.g. "NVIDIA H100 (vulkan)".
    pub fn describe(&self) -> String {
        let name = if self.name.trim().is_empty() {
            "unnamed adapter"
        } else {
            self.name.trim()
        };
        format!("{name} ({})", self.backend)
    }
}

/// Whether an adapter's name is that of a CPU implementation (lavapipe, SwiftShader).
pub fn is_software_name(name: &str) -> bool {
    let name = name.to_lowercase();
    ["swiftshader", "llvmpipe", "lavapipe"]
        .iter()
        .any(|s| name.contains(s))
}

/// A device and its queue, with the adapter's limits.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
}

impl GpuContext {
    /// Opens the default (high-performance) adapter with every limit it offers.
    pub async fn new() -> Result<Self> {
        Self::open(None).await
    }

    /// [`GpuContext::new`] with storage bindings and buffers of at most `bytes` (or
    /// what the adapter offers, if less): a phone GPU's 128 MiB on any machine, so that
    /// the weights are split as they would be there.
    pub async fn with_max_binding(bytes: u64) -> Result<Self> {
        Self::open(Some(bytes)).await
    }

    async fn open(max_binding: Option<u64>) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoGpu(format!("no adapter ({e})")))?;
        let mut limits = adapter.limits();
        if let Some(bytes) = max_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(bytes);
            limits.max_buffer_size = limits.max_buffer_size.min(bytes);
        }
        Self::from_adapter(&adapter, limits).await
    }

    /// [`GpuContext::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Opens a device on `adapter` with `limits` (at most the adapter's) and the
    /// optional features the kernels can use.
    async fn from_adapter(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> Result<Self> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let wanted =
            wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("edge-reason"),
                required_features: offered & wanted,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::NoGpu(format!("the adapter refused a device ({e})")))?;
        let adapter = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type).to_lowercase(),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            subgroups: offered.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 4,
            subgroup_min_size: info.subgroup_min_size,
            shader_f16: offered.contains(wgpu::Features::SHADER_F16),
            timestamps: offered.contains(wgpu::Features::TIMESTAMP_QUERY),
            software: info.device_type == wgpu::DeviceType::Cpu || is_software_name(&info.name),
        };
        Ok(GpuContext {
            device,
            queue,
            adapter,
            limits,
        })
    }

    /// Largest buffer one binding may see, and one buffer may be.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Copies `bytes` bytes of `src` from offset 0 into a fresh mappable buffer and
    /// returns them. Used for sampled ids and, in tests and `logits`, activations.
    pub async fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.read_mapped(&staging).await
    }

    /// Maps `staging` (MAP_READ) and returns its whole contents.
    pub async fn read_mapped(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device failed: {e}")))?;
        rx.await
            .map_err(|_| Error::Gpu("the device was lost while reading back".into()))?
            .map_err(|e| Error::Gpu(format!("reading a buffer back failed: {e}")))?;
        let out = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading a buffer back failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }
}
