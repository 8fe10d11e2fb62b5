//! Where a forward pass spends its GPU time: with a [`Profiler`], every dispatch runs in
//! a compute pass of its own with timestamps at its start and end, and the report sums
//! the time and counts the dispatches per kernel. The wall time of the step minus the
//! summed kernel time is what the dispatches cost beyond their work (submission,
//! per-pass and per-dispatch overhead).
//!
//! Profiling changes what it measures a little (a pass per dispatch adds barriers), so
//! the bench reports it next to, not instead of, the unprofiled step time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::kernels::Kernel;
use crate::gpu::GpuContext;

/// Timestamps of up to `capacity` dispatches.
pub struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    /// The kernel of each profiled dispatch, in order.
    pub(crate) kernels: Vec<Kernel>,
}

/// Time and dispatch count of one kernel over a profiled pass.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTime {
    pub dispatches: usize,
    pub ms: f64,
}

/// What a profiled pass spent, per kernel.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub dispatches: usize,
    /// Sum of the kernels' own time.
    pub kernel_ms: f64,
    pub kernels: BTreeMap<String, KernelTime>,
}

impl Profiler {
    /// A profiler for passes of up to `capacity` dispatches, or an error when the
    /// adapter has no timestamp queries.
    pub fn new(ctx: &GpuContext, capacity: u32) -> Result<Self> {
        if !ctx.adapter.timestamps {
            return Err(Error::Gpu(format!(
                "{} offers no timestamp queries, so a pass cannot be profiled",
                ctx.adapter.describe()
            )));
        }
        let queries = capacity * 2;
        let bytes = queries as u64 * 8;
        let dev = &ctx.device;
        Ok(Profiler {
            set: dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            }),
            resolve: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            capacity,
            kernels: Vec::new(),
        })
    }

    /// Begins the compute pass of the next dispatch, of `kernel`, on `enc`.
    pub(crate) fn begin_pass(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
    ) -> Result<wgpu::ComputePass<'static>> {
        let i = self.kernels.len() as u32;
        if i >= self.capacity {
            return Err(Error::Gpu(format!(
                "the pass has more than {} dispatches to profile",
                self.capacity
            )));
        }
        self.kernels.push(kernel);
        Ok(enc
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &self.set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            })
            .forget_lifetime())
    }

    /// Records the copy of the timestamps to the readback buffer (after the passes).
    pub(crate) fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.kernels.len() as u32 * 2;
        if n > 0 {
            enc.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, n as u64 * 8);
        }
    }

    /// Reads the timestamps of the submitted pass and sums them per kernel; the
    /// profiler is then ready for another pass.
    pub async fn report(&mut self, ctx: &GpuContext) -> Result<ProfileReport> {
        let raw = ctx.read_mapped(&self.staging).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let ns_per_tick = ctx.queue.get_timestamp_period() as f64;
        let mut kernels: BTreeMap<String, KernelTime> = BTreeMap::new();
        let mut kernel_ms = 0.0;
        for (i, k) in self.kernels.iter().enumerate() {
            let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
            let ms = t1.saturating_sub(t0) as f64 * ns_per_tick / 1e6;
            kernel_ms += ms;
            let e = kernels.entry(format!("{k:?}")).or_insert(KernelTime {
                dispatches: 0,
                ms: 0.0,
            });
            e.dispatches += 1;
            e.ms += ms;
        }
        let dispatches = self.kernels.len();
        self.kernels.clear();
        Ok(ProfileReport {
            dispatches,
            kernel_ms,
            kernels,
        })
    }
}
