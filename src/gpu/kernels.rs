//! The WGSL kernels (one file per op under `kernels/`) and a cache of their compute
//! pipelines, keyed by kernel and override constants.

use std::cell::RefCell;
use std::collections::HashMap;

/// The precision of the values a GPU KV cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPrecision {
    /// Exact keys and values (4 bytes each).
    F32,
    /// Rounded to f16 (2 bytes each, as llama.cpp's default cache): half the memory
    /// and the attention reads.
    F16,
    /// INT8 with one scale per position and KV head (the method's KV8): about a quarter
    /// of f32's memory.
    #[serde(rename = "int8")]
    Int8,
}

/// How the KV cache holds its values (the `kv_*.wgsl` prelude of the kernels that
/// read or write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvStore {
    F32,
    /// f16 words (`shader-f16`).
    F16,
    /// Two f16 values per u32 word (pack2x16float): f16 without `shader-f16`.
    F16Packed,
    /// Four i8 values per u32 word, then one f32 scale per KV head (kv_i8.wgsl).
    Int8,
}

impl KvStore {
    /// "f32", "f16" or "f16-packed".
    pub fn name(self) -> &'static str {
        match self {
            KvStore::F32 => "f32",
            KvStore::F16 => "f16",
            KvStore::F16Packed => "f16-packed",
            KvStore::Int8 => "int8",
        }
    }

    /// Bytes of one position's keys (or values) of one layer: `kv_dim` values of
    /// `n_kv_heads` heads.
    pub fn row_bytes(self, kv_dim: usize, n_kv_heads: usize) -> usize {
        match self {
            KvStore::F32 => kv_dim * 4,
            KvStore::F16 | KvStore::F16Packed => kv_dim * 2,
            KvStore::Int8 => kv_dim + 4 * n_kv_heads,
        }
    }
}

/// Every compute kernel of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Matvec,
    Embed,
    RmsNorm,
    Rope,
    KvWrite(KvStore),
    Attention(KvStore),
    AttentionPrefill(KvStore),
    AttentionMerge,
    Swiglu,
    Add,
    Sample,
    /// `t = x A^T` of a LoRA update, rows with the flag only.
    LoraDown,
    /// `y += t B^T` of a LoRA update, rows with the flag only.
    LoraUp,
    /// `pooled += sum of the rows of H`: the switcher's features.
    Pool,
}

macro_rules! with_common {
    ($($file:literal),+) => {
        concat!(include_str!("kernels/common.wgsl"), $(include_str!($file)),+)
    };
}

/// A kernel that reads (or, with `store`, writes) the KV cache, in each cache format.
macro_rules! with_kv {
    ($kv:expr, store, $file:literal) => {
        match $kv {
            KvStore::F32 => {
                with_common!("kernels/kv_f32.wgsl", "kernels/kv_f32_store.wgsl", $file)
            }
            KvStore::F16 => concat!(
                "enable f16;\n",
                with_common!("kernels/kv_f16.wgsl", "kernels/kv_f16_store.wgsl", $file)
            ),
            KvStore::F16Packed => with_common!(
                "kernels/kv_f16_packed.wgsl",
                "kernels/kv_f16_packed_store.wgsl",
                $file
            ),
            // Per-head scales: a write kernel of its own.
            KvStore::Int8 => with_common!("kernels/kv_i8.wgsl", "kernels/kv_write_i8.wgsl"),
        }
    };
    ($kv:expr, $($file:literal),+) => {
        match $kv {
            KvStore::F32 => with_common!("kernels/kv_f32.wgsl", $($file),+),
            KvStore::F16 => concat!(
                "enable f16;\n",
                with_common!("kernels/kv_f16.wgsl", $($file),+)
            ),
            KvStore::F16Packed => with_common!("kernels/kv_f16_packed.wgsl", $($file),+),
            KvStore::Int8 => with_common!("kernels/kv_i8.wgsl", $($file),+),
        }
    };
}

/// Browsers (Tint) want the subgroup extension enabled in the shader; wgpu's own
/// WGSL front end (naga) takes subgroup operations once the device has the feature,
/// and rejects the directive.
#[cfg(target_arch = "wasm32")]
macro_rules! subgroups_directive {
    () => {
        "enable subgroups;\n"
    };
}
#[cfg(not(target_arch = "wasm32"))]
macro_rules! subgroups_directive {
    () => {
        ""
    };
}

impl Kernel {
    /// WGSL source: the op's file after the shared declarations it uses; the matvec
    /// with its subgroup or workgroup-memory row reduction.
    fn source(self, subgroups: bool) -> &'static str {
        match self {
            Kernel::Matvec if subgroups => concat!(
                subgroups_directive!(),
                with_common!(
                    "kernels/quant.wgsl",
                    "kernels/matvec_reduce_subgroup.wgsl",
                    "kernels/matvec.wgsl"
                )
            ),
            Kernel::Matvec => with_common!(
                "kernels/quant.wgsl",
                "kernels/matvec_reduce_shared.wgsl",
                "kernels/matvec.wgsl"
            ),
            Kernel::Embed => with_common!("kernels/quant.wgsl", "kernels/embed.wgsl"),
            Kernel::RmsNorm => with_common!("kernels/rms_norm.wgsl"),
            Kernel::Rope => with_common!("kernels/rope.wgsl"),
            Kernel::KvWrite(kv) => with_kv!(kv, store, "kernels/kv_write.wgsl"),
            Kernel::Attention(kv) => {
                with_kv!(kv, "kernels/attention_io.wgsl", "kernels/attention.wgsl")
            }
            Kernel::AttentionPrefill(kv) => with_kv!(
                kv,
                "kernels/attention_io.wgsl",
                "kernels/attention_prefill.wgsl"
            ),
            Kernel::AttentionMerge => with_common!("kernels/attention_merge.wgsl"),
            Kernel::Swiglu => with_common!("kernels/swiglu.wgsl"),
            Kernel::Add => with_common!("kernels/add.wgsl"),
            Kernel::Sample => with_common!("kernels/sample.wgsl"),
            Kernel::LoraDown => with_common!("kernels/lora_down.wgsl"),
            Kernel::LoraUp => with_common!("kernels/lora_up.wgsl"),
            Kernel::Pool => with_common!("kernels/pool.wgsl"),
        }
    }
}

/// How a kernel binds one resource.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

impl Kernel {
    /// Bindings 0, 1, ... of group 0, as the `.wgsl` file declares them.
    fn slots(self) -> &'static [Slot] {
        use Slot::{Read as R, ReadWrite as W, Uniform as U};
        match self {
            Kernel::Matvec => &[R, R, U, U, R, W, R],
            Kernel::Embed => &[R, R, U, U, R, W],
            Kernel::RmsNorm => &[U, U, R, R, W],
            Kernel::Rope => &[U, U, R, W],
            Kernel::KvWrite(_) => &[U, U, R, R, R, W, W],
            Kernel::Attention(_) | Kernel::AttentionPrefill(_) => &[U, U, R, R, R, R, W],
            Kernel::AttentionMerge => &[U, U, R, W],
            Kernel::Swiglu | Kernel::Add => &[U, U, W, R],
            Kernel::Sample => &[U, U, R, R, W],
            Kernel::LoraDown | Kernel::LoraUp => &[U, U, R, R, R, R, W],
            Kernel::Pool => &[U, U, R, W],
        }
    }
}

/// Threads of a matvec workgroup (`WG` in matvec.wgsl).
const MATVEC_WORKGROUP: u32 = 64;

/// Override constants of one pipeline, e.g. `[("FORMAT", 3), ("M", 4)]`.
pub type Constants = Vec<(&'static str, u32)>;

/// Compiled shader modules and pipelines, created on first use and kept.
pub struct Kernels {
    device: wgpu::Device,
    /// Whether the kernels use subgroup operations.
    subgroups: bool,
    /// Whether the kernels may use f16 values (`shader-f16`).
    shader_f16: bool,
    /// Threads per output row of the matvec (its `LANES`).
    matvec_lanes: u32,
    modules: RefCell<HashMap<Kernel, wgpu::ShaderModule>>,
    /// One layout per kernel, shared by all its specializations (so bind groups are).
    layouts: RefCell<HashMap<Kernel, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: RefCell<HashMap<(Kernel, Constants), wgpu::ComputePipeline>>,
}

impl Kernels {
    /// Kernels for `ctx`'s device: with subgroup operations when
    /// `ctx.adapter.subgroups`, f16 values when `ctx.adapter.shader_f16`, else the
    /// fallbacks.
    pub fn new(ctx: &super::GpuContext) -> Self {
        let subgroups = ctx.adapter.subgroups;
        // A CPU runs a row best on one thread: no reduction, and 64 rows a workgroup
        // (measured: the decode step at a third of 16 lanes' time on SwiftShader, and
        // 20-30% less on lavapipe).
        let matvec_lanes = if ctx.adapter.software {
            1
        } else if subgroups {
            ctx.adapter.subgroup_min_size.clamp(4, 16)
        } else {
            16
        };
        Kernels {
            device: ctx.device.clone(),
            subgroups,
            shader_f16: ctx.adapter.shader_f16,
            matvec_lanes,
            modules: RefCell::default(),
            layouts: RefCell::default(),
            pipelines: RefCell::default(),
        }
    }

    /// How a cache of `precision` stores its values on this device.
    pub fn kv_store(&self, precision: KvPrecision) -> KvStore {
        match precision {
            KvPrecision::F32 => KvStore::F32,
            KvPrecision::F16 if self.shader_f16 => KvStore::F16,
            KvPrecision::F16 => KvStore::F16Packed,
            KvPrecision::Int8 => KvStore::Int8,
        }
    }

    /// Whether the kernels use subgroup operations.
    pub fn subgroups(&self) -> bool {
        self.subgroups
    }

    /// Output rows one matvec workgroup computes.
    pub fn matvec_rows(&self) -> u32 {
        MATVEC_WORKGROUP / self.matvec_lanes
    }

    /// The bind group layout every pipeline of `kernel` uses.
    pub fn layout(&self, kernel: Kernel) -> wgpu::BindGroupLayout {
        self.layouts_of(kernel).0
    }

    fn layouts_of(&self, kernel: Kernel) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        self.layouts
            .borrow_mut()
            .entry(kernel)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
                    .slots()
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match slot {
                                Slot::Uniform => wgpu::BufferBindingType::Uniform,
                                Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                                Slot::ReadWrite => {
                                    wgpu::BufferBindingType::Storage { read_only: false }
                                }
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                let label = format!("{kernel:?}");
                let group =
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(&label),
                            entries: &entries,
                        });
                let pipeline =
                    self.device
                        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                            label: Some(&label),
                            bind_group_layouts: &[Some(&group)],
                            immediate_size: 0,
                        });
                (group, pipeline)
            })
            .clone()
    }

    /// The pipeline of `kernel` specialized by `constants`.
    pub fn pipeline(
        &self,
        kernel: Kernel,
        constants: &[(&'static str, u32)],
    ) -> wgpu::ComputePipeline {
        let mut constants = constants.to_vec();
        if kernel == Kernel::Matvec {
            constants.push(("LANES", self.matvec_lanes));
        }
        let key = (kernel, constants.clone());
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let module = self
            .modules
            .borrow_mut()
            .entry(kernel)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("{kernel:?}")),
                        source: wgpu::ShaderSource::Wgsl(kernel.source(self.subgroups).into()),
                    })
            })
            .clone();
        let values: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&format!("{kernel:?}{constants:?}")),
                layout: Some(&self.layouts_of(kernel).1),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &values,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.pipelines.borrow_mut().insert(key, pipeline.clone());
        pipeline
    }
}
