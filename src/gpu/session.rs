//! A GPU session: the KV cache, activations and step buffers of one model's sequences,
//! allocated once; and the [`Pass`] that records a forward pass into one compute pass.
//!
//! KV slots: `0..main_capacity` hold the main sequence (the prompt); stream `s` (a
//! candidate decoded in parallel) owns `main_capacity + s * stream_capacity ..`. A row
//! attends to the first `n_prefix` main slots and then to its stream's own slots, so N
//! candidates share one copy of the prompt's keys and values.

use std::collections::HashMap;

use wgpu::util::DeviceExt;

use super::backend::{Gpu, GpuMatrix, GpuVector};
use super::kernels::{Kernel, Kernels, KvStore};
use super::lora::{GpuAdapter, GpuLora, MAX_GPU_RANK};
use super::profile::Profiler;
use super::GpuModel;
use crate::cpu::ops::{RopeStyle, RopeTable};
use crate::error::{Error, Result};
use crate::model::{Act, Config, Linear, Logits, Pass};
use crate::sampler::Draw;

/// Most rows one forward pass takes (a prefill chunk; decode uses one row per stream).
pub const MAX_ROWS: usize = 64;
/// Most streams decoded in one step (rows of the batched matvec).
pub const MAX_STREAMS: usize = 16;
/// Keys one attention workgroup reads. Fixed, so that a row's result does not depend on
/// which other rows share its pass.
const KEYS_PER_SPLIT: u32 = 128;
/// Largest head size of attention_prefill.wgsl (`HD`), and its rows per workgroup.
const TILED_MAX_HEAD_DIM: usize = 64;
const TILED_ROWS: u32 = 16;
/// Rows of activations per matvec workgroup in prefill (matvec.wgsl's MAX_M).
const MAX_M: u32 = 16;
/// Offset of the output-head copy of [`Count`] (uniform offset alignment).
const HEAD_COUNT_OFFSET: u64 = 256;

/// One row of a forward pass (common.wgsl's `Row`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Row {
    pub token: u32,
    /// Position in its sequence.
    pub pos: u32,
    /// KV slot its key and value are written to.
    pub slot: u32,
    /// Keys read from main slots `0..n_prefix`...
    pub n_prefix: u32,
    /// ...then from `suffix_start..suffix_start + n_suffix`.
    pub suffix_start: u32,
    pub n_suffix: u32,
    /// 1 when the pass's LoRA adapter applies to this row.
    pub lora: u32,
    pub _pad: u32,
}

impl Row {
    /// Token `token` at position `pos` of the main sequence: written to slot `pos`,
    /// attending to slots `0..=pos`.
    pub fn main(token: u32, pos: u32) -> Row {
        Row {
            token,
            pos,
            slot: pos,
            n_prefix: pos + 1,
            ..Row::default()
        }
    }
}

/// common.wgsl's `Count`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Count {
    n: u32,
    first_row: u32,
    keys_per_split: u32,
    n_splits: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    width: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeParams {
    n_heads: u32,
    head_dim: u32,
    halves: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    kv_dim: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Small uniforms fixed for the session.
struct Params {
    norm: wgpu::Buffer,
    rope_q: wgpu::Buffer,
    rope_k: wgpu::Buffer,
    kv_dim: wgpu::Buffer,
    attn: wgpu::Buffer,
    width_d: wgpu::Buffer,
    width_ff: wgpu::Buffer,
    vocab: wgpu::Buffer,
}

impl Params {
    fn buffers(&self) -> [&wgpu::Buffer; 8] {
        [
            &self.norm,
            &self.rope_q,
            &self.rope_k,
            &self.kv_dim,
            &self.attn,
            &self.width_d,
            &self.width_ff,
            &self.vocab,
        ]
    }
}

/// What a cached bind group binds (weights by address: the model never moves or
/// changes while a session lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BindKey {
    Embed(usize, usize),
    Norm(usize, Act, Act, bool),
    Linear(usize, usize, Act, Act),
    Head(usize, usize),
    Rope(Act),
    KvWrite(usize),
    Attention(usize),
    AttentionPrefill(usize),
    Merge,
    Add(Act, Act),
    Swiglu,
    Sample,
    LoraDown(usize, Act),
    LoraUp(usize, Act),
    Pool,
}

/// One stream of parallel decoding: its own KV slots after the main sequence.
#[derive(Debug, Clone, Copy)]
struct Stream {
    start_slot: usize,
    /// Tokens of its own (after the shared prefix).
    len: usize,
    /// Main positions it attends to.
    prefix: usize,
}

/// Buffers of one model's sequences on the device.
pub struct GpuSession {
    /// (MAX_ROWS, width) per [`Act`].
    acts: [wgpu::Buffer; 9],
    /// (MAX_ROWS, vocab)
    logits: wgpu::Buffer,
    /// (MAX_ROWS) [`Draw`] of each output-head row.
    draws: wgpu::Buffer,
    /// (2, MAX_ROWS) the tokens the last pass picked, then their log-probabilities.
    ids: wgpu::Buffer,
    ids_staging: wgpu::Buffer,
    /// (MAX_ROWS) [`Row`]
    rows: wgpu::Buffer,
    /// [`Count`] of all rows at 0, of the output-head rows at 256.
    counts: wgpu::Buffer,
    /// (MAX_ROWS, head_dim / 2) (cos, sin)
    cos_sin: wgpu::Buffer,
    /// (MAX_ROWS, MAX_GPU_RANK) `A x` of the LoRA update being applied.
    lora_t: wgpu::Buffer,
    /// (d) the sum of the pooled rows' final hidden states (the switcher's features).
    pooled: wgpu::Buffer,
    /// Per layer: (slots, kv_dim)
    k_cache: Vec<wgpu::Buffer>,
    v_cache: Vec<wgpu::Buffer>,
    /// (MAX_ROWS, n_head, max_splits, head_dim + 2)
    partials: wgpu::Buffer,
    max_splits: usize,
    dummy: wgpu::Buffer,
    params: Params,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    main_capacity: usize,
    stream_capacity: usize,
    n_streams: usize,
    /// Tokens of the main sequence.
    main_len: usize,
    streams: Vec<Stream>,
    /// Rows of the output head in the last pass.
    head_rows: usize,
    /// Device bytes of the KV cache.
    pub kv_bytes: u64,
    /// How the KV cache holds its values.
    kv_store: KvStore,
    /// Whether passes of several main-sequence rows use the tiled prefill attention
    /// (attention_prefill.wgsl; on by default, off to test the per-row kernel).
    pub tiled_prefill: bool,
}

fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, v: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(v),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

fn storage(device: &wgpu::Device, label: &str, bytes: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

impl GpuSession {
    /// Device bytes of every buffer the session holds: its KV cache, activations,
    /// logits, attention partials and the small ones (the model's weights are
    /// [`GpuModel::weight_bytes`]).
    pub fn buffer_bytes(&self) -> u64 {
        let single = [
            &self.logits,
            &self.draws,
            &self.ids,
            &self.ids_staging,
            &self.rows,
            &self.counts,
            &self.cos_sin,
            &self.lora_t,
            &self.pooled,
            &self.partials,
            &self.dummy,
        ];
        self.acts
            .iter()
            .chain(single)
            .chain(&self.k_cache)
            .chain(&self.v_cache)
            .chain(self.params.buffers())
            .map(|b| b.size())
            .sum()
    }

    /// Buffers for a main sequence of up to `main_capacity` tokens and up to
    /// `n_streams` parallel streams of `stream_capacity` tokens each.
    pub fn new(
        gm: &GpuModel,
        main_capacity: usize,
        n_streams: usize,
        stream_capacity: usize,
    ) -> Result<Self> {
        let c = &gm.model.config;
        let dev = &gm.ctx.device;
        if n_streams > MAX_STREAMS {
            return Err(Error::InvalidArgument(format!(
                "{n_streams} streams asked; at most {MAX_STREAMS} decode in parallel"
            )));
        }
        let slots = main_capacity + n_streams * stream_capacity;
        let kv_store = gm.kv_store;
        if kv_store == KvStore::Int8 && (c.head_dim % 4 != 0) {
            return Err(Error::UnsupportedConfig(format!(
                "the INT8 KV cache needs a head size divisible by 4, not {}",
                c.head_dim
            )));
        }
        let row_bytes = kv_store.row_bytes(c.kv_dim(), c.n_kv_head);
        let kv_layer_bytes = (slots * row_bytes) as u64;
        if kv_layer_bytes > gm.ctx.max_binding() {
            return Err(Error::GpuMemory {
                what: format!("the KV cache of one layer ({slots} positions)"),
                need: kv_layer_bytes,
                limit: gm.ctx.max_binding(),
            });
        }
        let f = |w: usize| (MAX_ROWS * w * 4) as u64;
        let acts = Act::ALL.map(|a| storage(dev, &format!("{a:?}"), f(a.width(c))));
        let max_splits = slots.div_ceil(KEYS_PER_SPLIT as usize).max(1);
        let partial_bytes = (MAX_ROWS * c.n_head * max_splits * (c.head_dim + 2) * 4) as u64;
        let half = c.head_dim / 2;
        let rope = |n_heads: usize| RopeParams {
            n_heads: n_heads as u32,
            head_dim: c.head_dim as u32,
            halves: (c.rope_style == RopeStyle::Halves) as u32,
            _pad: 0,
        };
        let params = Params {
            norm: uniform(
                dev,
                &NormParams {
                    width: c.n_embd as u32,
                    eps: c.rms_eps,
                },
            ),
            rope_q: uniform(dev, &rope(c.n_head)),
            rope_k: uniform(dev, &rope(c.n_kv_head)),
            kv_dim: uniform(dev, &[c.kv_dim() as u32, 0, 0, 0]),
            attn: uniform(
                dev,
                &AttnParams {
                    n_heads: c.n_head as u32,
                    n_kv_heads: c.n_kv_head as u32,
                    head_dim: c.head_dim as u32,
                    kv_dim: c.kv_dim() as u32,
                    scale: 1.0 / (c.head_dim as f32).sqrt(),
                    _pad: [0; 3],
                },
            ),
            width_d: uniform(dev, &[c.n_embd as u32, 0, 0, 0]),
            width_ff: uniform(dev, &[c.n_ff as u32, 0, 0, 0]),
            vocab: uniform(dev, &[c.vocab_size as u32, 0, 0, 0]),
        };
        let session = GpuSession {
            acts,
            logits: storage(dev, "logits", f(c.vocab_size)),
            draws: storage(
                dev,
                "draws",
                (MAX_ROWS * std::mem::size_of::<Draw>()) as u64,
            ),
            ids: storage(dev, "ids", (2 * MAX_ROWS * 4) as u64),
            ids_staging: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ids readback"),
                size: (2 * MAX_ROWS * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            rows: storage(dev, "rows", (MAX_ROWS * std::mem::size_of::<Row>()) as u64),
            counts: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("counts"),
                size: HEAD_COUNT_OFFSET * 2,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            cos_sin: storage(dev, "cos_sin", (MAX_ROWS * half * 8) as u64),
            k_cache: (0..c.n_layer)
                .map(|_| storage(dev, "k cache", kv_layer_bytes))
                .collect(),
            v_cache: (0..c.n_layer)
                .map(|_| storage(dev, "v cache", kv_layer_bytes))
                .collect(),
            partials: storage(dev, "attention partials", partial_bytes),
            lora_t: storage(dev, "lora t", (MAX_ROWS * MAX_GPU_RANK * 4) as u64),
            pooled: storage(dev, "pooled", (c.n_embd * 4) as u64),
            max_splits,
            dummy: storage(dev, "no bias", 4),
            params,
            bind_groups: HashMap::new(),
            main_capacity,
            stream_capacity,
            n_streams,
            main_len: 0,
            streams: Vec::new(),
            head_rows: 0,
            kv_bytes: kv_layer_bytes * 2 * c.n_layer as u64,
            tiled_prefill: true,
            kv_store,
        };
        Ok(session)
    }

    /// Tokens in the main sequence.
    pub fn main_len(&self) -> usize {
        self.main_len
    }

    /// Rows that append `tokens` to the main sequence (checked against its capacity).
    pub fn main_rows(&self, tokens: &[u32]) -> Result<Vec<Row>> {
        self.check_main_room(tokens.len())?;
        Ok(tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| Row::main(token, (self.main_len + i) as u32))
            .collect())
    }

    /// Fails when `n` more tokens would not fit the main sequence.
    pub fn check_main_room(&self, n: usize) -> Result<()> {
        let end = self.main_len + n;
        if end > self.main_capacity {
            return Err(Error::ContextOverflow {
                tokens: end,
                capacity: self.main_capacity,
            });
        }
        Ok(())
    }

    /// Starts `n` streams that continue from the main sequence as it is now; their
    /// tokens go to their own slots and the main sequence's are shared.
    pub fn fork(&mut self, n: usize) -> Result<()> {
        let available = self.n_streams;
        if n > available {
            return Err(Error::InvalidArgument(format!(
                "{n} streams asked; this session was made for {available}"
            )));
        }
        self.streams = (0..n)
            .map(|s| Stream {
                start_slot: self.main_capacity + s * self.stream_capacity,
                len: 0,
                prefix: self.main_len,
            })
            .collect();
        Ok(())
    }

    /// Rows that append one token to each stream (`tokens[s]` to stream `s`).
    pub fn stream_rows(&self, tokens: &[u32]) -> Result<Vec<Row>> {
        if tokens.len() != self.streams.len() {
            return Err(Error::InvalidArgument(format!(
                "{} tokens for {} streams",
                tokens.len(),
                self.streams.len()
            )));
        }
        let feeds: Vec<(usize, &[u32])> = tokens
            .iter()
            .enumerate()
            .map(|(s, t)| (s, std::slice::from_ref(t)))
            .collect();
        self.feed_rows(&feeds, false)
    }

    /// Rows that append `tokens` to stream `stream` for each `(stream, tokens)` of
    /// `feeds` (a stream's tokens at consecutive positions, a stream at most once),
    /// with the adapter on when `lora`.
    pub fn feed_rows(&self, feeds: &[(usize, &[u32])], lora: bool) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (i, &(stream, tokens)) in feeds.iter().enumerate() {
            let Some(s) = self.streams.get(stream) else {
                return Err(Error::InvalidArgument(format!(
                    "stream {stream} of {}",
                    self.streams.len()
                )));
            };
            if feeds[..i].iter().any(|&(other, _)| other == stream) {
                return Err(Error::InvalidArgument(format!(
                    "stream {stream} fed twice in one pass"
                )));
            }
            if s.len + tokens.len() > self.stream_capacity {
                return Err(Error::ContextOverflow {
                    tokens: s.prefix + s.len + tokens.len(),
                    capacity: s.prefix + self.stream_capacity,
                });
            }
            rows.extend(tokens.iter().enumerate().map(|(j, &token)| Row {
                token,
                pos: (s.prefix + s.len + j) as u32,
                slot: (s.start_slot + s.len + j) as u32,
                n_prefix: s.prefix as u32,
                suffix_start: s.start_slot as u32,
                n_suffix: (s.len + j + 1) as u32,
                lora: lora as u32,
                _pad: 0,
            }));
        }
        Ok(rows)
    }

    /// Tokens stream `stream` holds of its own (after the shared prefix).
    pub fn stream_len(&self, stream: usize) -> usize {
        self.streams.get(stream).map_or(0, |s| s.len)
    }

    /// Positions the KV cache holds now: the main sequence and every stream's own.
    pub fn kv_positions(&self) -> usize {
        self.main_len + self.streams.iter().map(|s| s.len).sum::<usize>()
    }

    /// Bytes of KV cache one position takes (keys and values of every layer).
    pub fn kv_bytes_per_position(&self) -> u64 {
        let slots = (self.main_capacity + self.n_streams * self.stream_capacity) as u64;
        self.kv_bytes / slots.max(1)
    }

    /// Makes the rows of the last pass part of their sequences.
    fn commit(&mut self, rows: &[Row]) {
        for r in rows {
            if r.n_suffix == 0 {
                self.main_len = self.main_len.max(r.pos as usize + 1);
            } else if let Some(s) = self
                .streams
                .iter_mut()
                .find(|s| s.start_slot as u32 == r.suffix_start)
            {
                s.len += 1;
            }
        }
    }

    /// Forgets the main sequence from `len` on, and every stream.
    pub fn truncate(&mut self, len: usize) {
        self.main_len = self.main_len.min(len);
        self.streams.clear();
    }
}

/// What a forward pass does besides running its rows.
#[derive(Default)]
pub struct PassOptions<'a> {
    /// The rows whose logits (and picked tokens) the pass produces.
    pub want: Logits,
    /// How each output row picks its token, in order (greedy past the end).
    pub draws: &'a [Draw],
    /// The adapter applied to the rows whose `lora` flag is set.
    pub adapter: Option<&'a GpuAdapter>,
    /// Adds the sum of the rows' final hidden states (after the final norm) to the
    /// session's pooled features ([`GpuModel::read_pooled`]).
    pub pool: bool,
    /// Times each dispatch (read with [`Profiler::report`]).
    pub profiler: Option<&'a mut Profiler>,
}

impl GpuModel {
    /// Records and submits one forward pass of `rows` (at most [`MAX_ROWS`]); the
    /// greedy ids of the rows `want` names are then ready for [`GpuModel::read_ids`],
    /// and their logits for [`GpuModel::read_logits`].
    pub fn forward(&self, s: &mut GpuSession, rows: &[Row], want: Logits) -> Result<()> {
        self.run_pass(
            s,
            rows,
            PassOptions {
                want,
                ..Default::default()
            },
        )
    }

    /// [`GpuModel::forward`], the output rows picking their tokens by `draws` (one per
    /// output row in order; rows past its end greedy), and each dispatch timed by
    /// `profiler` when given (read the times with [`Profiler::report`]).
    pub fn forward_with(
        &self,
        s: &mut GpuSession,
        rows: &[Row],
        want: Logits,
        draws: &[Draw],
        profiler: Option<&mut Profiler>,
    ) -> Result<()> {
        self.run_pass(
            s,
            rows,
            PassOptions {
                want,
                draws,
                profiler,
                ..Default::default()
            },
        )
    }

    /// Records and submits one forward pass of `rows` as `o` says, and makes the rows
    /// part of their sequences.
    pub fn run_pass(&self, s: &mut GpuSession, rows: &[Row], o: PassOptions) -> Result<()> {
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        self.model.config.check_tokens(&tokens)?;
        let want = o.want;
        let lora = o.adapter.filter(|_| rows.iter().any(|r| r.lora != 0));
        self.record(s, rows, o, |pass| {
            self.model
                .run_with(pass, want, lora.map(|a| a.layers.as_slice()))
        })?;
        s.commit(rows);
        Ok(())
    }

    /// Zeroes the session's pooled features.
    pub fn clear_pooled(&self, s: &GpuSession) {
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&s.pooled, 0, None);
        self.ctx.queue.submit([enc.finish()]);
    }

    /// The pooled features (d): the sum of the final hidden states of the rows of
    /// every pass run with `pool` since [`GpuModel::clear_pooled`].
    pub async fn read_pooled(&self, s: &GpuSession) -> Result<Vec<f32>> {
        let bytes = (self.model.config.n_embd * 4) as u64;
        let raw = self.ctx.read(&s.pooled, bytes).await?;
        Ok(bytemuck::cast_slice::<u8, f32>(&raw).to_vec())
    }

    /// Picks again from the logits the last pass left, by `draws` (one per output row
    /// of that pass): a token for each row, ready for [`GpuModel::read_picks`].
    pub fn pick_again(&self, s: &mut GpuSession, draws: &[Draw]) -> Result<()> {
        let head_rows = s.head_rows;
        if head_rows == 0 {
            return Err(Error::InvalidArgument(
                "the last pass produced no logits to pick from".into(),
            ));
        }
        write_draws(&self.ctx.queue, s, draws, head_rows);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = GpuPass {
                gm: self,
                s: &mut *s,
                enc: &mut enc,
                cpass: None,
                profiler: None,
                error: None,
                n: 0,
                n_splits: 1,
                head_rows: head_rows as u32,
                tiled_attention: false,
                pool: false,
            };
            pass.sample();
        }
        enc.copy_buffer_to_buffer(&s.ids, 0, &s.ids_staging, 0, s.ids.size());
        self.ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    /// Appends `tokens` to the main sequence in passes of up to [`MAX_ROWS`] rows;
    /// `want` names the logits of the last pass, whose output rows pick their tokens
    /// by `draws` (see [`GpuModel::forward_with`]).
    pub fn append(
        &self,
        s: &mut GpuSession,
        tokens: &[u32],
        want: Logits,
        draws: &[Draw],
    ) -> Result<()> {
        s.check_main_room(tokens.len())?;
        let chunks: Vec<&[u32]> = tokens.chunks(MAX_ROWS).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let rows = s.main_rows(chunk)?;
            let (want, draws) = if i + 1 == chunks.len() {
                (want, draws)
            } else {
                (Logits::None, &[][..])
            };
            self.forward_with(s, &rows, want, draws, None)?;
        }
        Ok(())
    }

    /// Appends one token to each stream of `s` in one pass (`tokens[i]` to stream
    /// `i`); the logits of every stream are then ready, and the token each picked by
    /// its draw (`draws[i]`; greedy past its end).
    pub fn step_streams(&self, s: &mut GpuSession, tokens: &[u32], draws: &[Draw]) -> Result<()> {
        let rows = s.stream_rows(tokens)?;
        self.forward_with(s, &rows, Logits::All, draws, None)
    }

    /// Runs ops of a pass over `rows` chosen by `ops`, on activations first set from
    /// `inputs` (each (rows, width)), the output rows (`want`) picking by `draws`: the
    /// hook the kernel tests use.
    pub fn run_ops(
        &self,
        s: &mut GpuSession,
        rows: &[Row],
        inputs: &[(Act, &[f32])],
        want: Logits,
        draws: &[Draw],
        ops: impl FnOnce(&mut dyn Pass<Gpu>),
    ) -> Result<()> {
        for (act, values) in inputs {
            self.ctx
                .queue
                .write_buffer(&s.acts[*act as usize], 0, bytemuck::cast_slice(values));
        }
        let o = PassOptions {
            want,
            draws,
            ..Default::default()
        };
        self.record(s, rows, o, |pass| ops(pass))
    }

    /// Reads activation `act` (rows, width) back.
    pub async fn read_act(&self, s: &GpuSession, act: Act, rows: usize) -> Result<Vec<f32>> {
        let bytes = (rows * act.width(&self.model.config) * 4) as u64;
        let raw = self.ctx.read(&s.acts[act as usize], bytes).await?;
        Ok(bytemuck::cast_slice::<u8, f32>(&raw).to_vec())
    }

    /// Writes the step buffers for `rows`, records `ops` into one compute pass, and
    /// submits it.
    fn record(
        &self,
        s: &mut GpuSession,
        rows: &[Row],
        o: PassOptions,
        ops: impl FnOnce(&mut GpuPass),
    ) -> Result<()> {
        let c = &self.model.config;
        let PassOptions {
            want,
            draws,
            profiler,
            pool,
            ..
        } = o;
        let n = rows.len();
        if n == 0 || n > MAX_ROWS {
            return Err(Error::InvalidArgument(format!(
                "a GPU forward pass takes 1..={MAX_ROWS} rows, got {n}"
            )));
        }

        // 1. Step buffers: rows, counts, RoPE angles.
        let q = &self.ctx.queue;
        let max_keys = rows
            .iter()
            .map(|r| r.n_prefix + r.n_suffix)
            .max()
            .unwrap_or(1);
        let n_splits = max_keys.div_ceil(KEYS_PER_SPLIT).max(1);
        if n_splits as usize > s.max_splits {
            return Err(Error::Gpu(format!(
                "a row reads {max_keys} keys; the session holds at most {}",
                s.max_splits * KEYS_PER_SPLIT as usize
            )));
        }
        let (head_rows, first_row) = match want {
            Logits::None => (0, 0),
            Logits::Last => (1, n - 1),
            Logits::All => (n, 0),
        };
        let count = |n: usize, first_row: usize| Count {
            n: n as u32,
            first_row: first_row as u32,
            keys_per_split: KEYS_PER_SPLIT,
            n_splits,
        };
        q.write_buffer(&s.rows, 0, bytemuck::cast_slice(rows));
        q.write_buffer(&s.counts, 0, bytemuck::bytes_of(&count(n, 0)));
        q.write_buffer(
            &s.counts,
            HEAD_COUNT_OFFSET,
            bytemuck::bytes_of(&count(head_rows, first_row)),
        );
        let freqs = self.model.rope_freqs.as_ref().map(|v| v.host.as_slice());
        let mut cos_sin = Vec::with_capacity(n * c.head_dim);
        for r in rows {
            let t = RopeTable::new(r.pos as usize, 1, c.head_dim, c.rope_base, freqs);
            for (cos, sin) in t.cos.iter().zip(&t.sin) {
                cos_sin.extend([*cos, *sin]);
            }
        }
        q.write_buffer(&s.cos_sin, 0, bytemuck::cast_slice(&cos_sin));
        if head_rows > 0 {
            write_draws(q, s, draws, head_rows);
        }

        // 2. Record the ops into one compute pass (one per dispatch when profiling)
        // and submit it.
        let tiled_attention = s.tiled_prefill
            && n > 1
            && c.head_dim <= TILED_MAX_HEAD_DIM
            && rows.iter().all(|r| r.n_suffix == 0);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let mut profiler = profiler;
        {
            let mut pass = GpuPass {
                gm: self,
                s: &mut *s,
                enc: &mut enc,
                cpass: None,
                profiler: profiler.as_deref_mut(),
                error: None,
                n: n as u32,
                n_splits,
                head_rows: head_rows as u32,
                tiled_attention,
                pool,
            };
            ops(&mut pass);
            if let Some(e) = pass.error.take() {
                return Err(e);
            }
        }
        if let Some(p) = &profiler {
            p.resolve(&mut enc);
        }
        if head_rows > 0 {
            enc.copy_buffer_to_buffer(&s.ids, 0, &s.ids_staging, 0, s.ids.size());
        }
        q.submit([enc.finish()]);
        s.head_rows = head_rows;
        Ok(())
    }

    /// The tokens the output rows of the last pass picked.
    pub async fn read_ids(&self, s: &GpuSession) -> Result<Vec<u32>> {
        Ok(self.read_picks(s).await?.0)
    }

    /// The tokens the output rows of the last pass picked, and each one's
    /// log-probability under its row's logits (log-softmax at temperature 1).
    pub async fn read_picks(&self, s: &GpuSession) -> Result<(Vec<u32>, Vec<f32>)> {
        let bytes = self.ctx.read_mapped(&s.ids_staging).await?;
        let words = bytemuck::cast_slice::<u8, u32>(&bytes);
        let ids = words[..s.head_rows].to_vec();
        let logprobs = words[MAX_ROWS..MAX_ROWS + s.head_rows]
            .iter()
            .map(|&w| f32::from_bits(w))
            .collect();
        Ok((ids, logprobs))
    }

    /// Logits (rows, vocab) of the output rows of the last pass.
    pub async fn read_logits(&self, s: &GpuSession) -> Result<Vec<f32>> {
        let bytes = (s.head_rows * self.model.config.vocab_size * 4) as u64;
        let raw = self.ctx.read(&s.logits, bytes).await?;
        Ok(bytemuck::cast_slice::<u8, f32>(&raw).to_vec())
    }
}

/// Records the ops of one forward pass into a compute pass.
pub struct GpuPass<'a> {
    gm: &'a GpuModel,
    s: &'a mut GpuSession,
    enc: &'a mut wgpu::CommandEncoder,
    /// The open compute pass (one for the whole forward pass unless profiling).
    cpass: Option<wgpu::ComputePass<'static>>,
    profiler: Option<&'a mut Profiler>,
    /// The first failure while recording (a [`Pass`] op cannot return one).
    error: Option<Error>,
    n: u32,
    n_splits: u32,
    head_rows: u32,
    /// Whether attention runs the tiled prefill kernel (several main-sequence rows).
    tiled_attention: bool,
    /// Whether the pass adds its rows' final hidden states to the pooled features.
    pool: bool,
}

/// Writes the draws of `head_rows` output rows (greedy past the end of `draws`).
fn write_draws(q: &wgpu::Queue, s: &GpuSession, draws: &[Draw], head_rows: usize) {
    let mut head_draws = [Draw::GREEDY; MAX_ROWS];
    let given = draws.len().min(head_rows);
    head_draws[..given].copy_from_slice(&draws[..given]);
    q.write_buffer(&s.draws, 0, bytemuck::cast_slice(&head_draws[..head_rows]));
}

impl GpuPass<'_> {
    fn kernels(&self) -> &Kernels {
        &self.gm.kernels
    }

    /// Override constants of the kernels that read or write the KV cache.
    fn kv_constants(&self) -> Vec<(&'static str, u32)> {
        let c = self.config();
        match self.s.kv_store {
            KvStore::Int8 => vec![
                ("KV_DIM", c.kv_dim() as u32),
                ("HEAD_DIM", c.head_dim as u32),
            ],
            _ => Vec::new(),
        }
    }

    fn config(&self) -> &Config {
        &self.gm.model.config
    }

    /// The bind group `key` names, made from `resources` (bindings 0, 1, ...) once.
    fn bind(
        &mut self,
        key: BindKey,
        kernel: Kernel,
        resources: impl FnOnce(&GpuSession) -> Vec<Binding>,
    ) -> wgpu::BindGroup {
        if let Some(bg) = self.s.bind_groups.get(&key) {
            return bg.clone();
        }
        let res = resources(self.s);
        let entries: Vec<wgpu::BindGroupEntry> = res
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: b.size,
                }),
            })
            .collect();
        let bg = self
            .gm
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&format!("{key:?}")),
                layout: &self.gm.kernels.layout(kernel),
                entries: &entries,
            });
        drop(entries);
        self.s.bind_groups.insert(key, bg.clone());
        bg
    }

    /// Dispatches `groups` workgroups along x (folded into y past the per-dimension
    /// limit), times `z`.
    fn dispatch(
        &mut self,
        kernel: Kernel,
        pipeline: &wgpu::ComputePipeline,
        bg: &wgpu::BindGroup,
        groups: u32,
        y: u32,
        z: u32,
    ) {
        let max = self.gm.ctx.limits.max_compute_workgroups_per_dimension;
        let (x, fold) = if groups > max {
            (max, groups.div_ceil(max))
        } else {
            (groups, 1)
        };
        self.dispatch_xyz(kernel, pipeline, bg, [x, y * fold, z]);
    }

    /// Dispatches `xyz` workgroups of `pipeline` with `bg` as group 0.
    fn dispatch_xyz(
        &mut self,
        kernel: Kernel,
        pipeline: &wgpu::ComputePipeline,
        bg: &wgpu::BindGroup,
        [x, y, z]: [u32; 3],
    ) {
        let Some(cpass) = self.pass_for(kernel) else {
            return;
        };
        cpass.set_pipeline(pipeline);
        cpass.set_bind_group(0, bg, &[]);
        cpass.dispatch_workgroups(x, y, z);
    }

    /// The compute pass the next dispatch (of `kernel`) goes into: the one open pass,
    /// or a fresh timed pass per dispatch when profiling. `None` after a failure.
    fn pass_for(&mut self, kernel: Kernel) -> Option<&mut wgpu::ComputePass<'static>> {
        if self.error.is_some() {
            return None;
        }
        if let Some(p) = self.profiler.as_deref_mut() {
            self.cpass = None; // ends the previous dispatch's pass
            match p.begin_pass(self.enc, kernel) {
                Ok(pass) => self.cpass = Some(pass),
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
        let enc = &mut *self.enc;
        Some(self.cpass.get_or_insert_with(|| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        }))
    }

    /// An elementwise kernel over `n * width` values.
    fn elementwise(&mut self, kernel: Kernel, key: BindKey, a: Act, b: Act) {
        let width = a.width(self.config());
        let pipeline = self.kernels().pipeline(kernel, &[]);
        let bg = self.bind(key, kernel, |s| {
            let w = match a {
                Act::Gate | Act::Up => &s.params.width_ff,
                _ => &s.params.width_d,
            };
            vec![
                whole(w),
                count_binding(s, false),
                whole(&s.acts[a as usize]),
                whole(&s.acts[b as usize]),
            ]
        });
        let groups = (self.n * width as u32).div_ceil(256);
        self.dispatch(kernel, &pipeline, &bg, groups, 1, 1);
    }

    /// `y = x W^T (+ bias)` for `rows` rows, part by part.
    fn matvec(&mut self, w: &GpuMatrix, bias: Option<&GpuVector>, x: Act, y: &Out, rows: u32) {
        let m = rows.min(MAX_M);
        let pipeline = self
            .kernels()
            .pipeline(Kernel::Matvec, &[("FORMAT", w.format as u32), ("M", m)]);
        for (i, part) in w.parts.iter().enumerate() {
            let key = match y {
                Out::Act(a) => BindKey::Linear(w as *const _ as usize, i, x, *a),
                Out::Logits => BindKey::Head(w as *const _ as usize, i),
            };
            let bg = self.bind(key, Kernel::Matvec, |s| {
                let head = matches!(y, Out::Logits);
                vec![
                    whole(&part.quants),
                    whole(&part.scales),
                    whole(&part.dims[bias.is_some() as usize]),
                    count_binding(s, head),
                    whole(&s.acts[x as usize]),
                    match y {
                        Out::Act(a) => whole(&s.acts[*a as usize]),
                        Out::Logits => whole(&s.logits),
                    },
                    whole(bias.map_or(&s.dummy, |b| &b.buffer)),
                ]
            });
            let groups = part.n_rows.div_ceil(self.kernels().matvec_rows());
            self.dispatch(Kernel::Matvec, &pipeline, &bg, groups, 1, rows.div_ceil(m));
        }
    }

    fn norm(&mut self, x: Act, weight: &GpuVector, out: Act, head: bool) {
        let pipeline = self.kernels().pipeline(Kernel::RmsNorm, &[]);
        let key = BindKey::Norm(weight as *const _ as usize, x, out, head);
        let bg = self.bind(key, Kernel::RmsNorm, |s| {
            vec![
                whole(&s.params.norm),
                count_binding(s, head),
                whole(&s.acts[x as usize]),
                whole(&weight.buffer),
                whole(&s.acts[out as usize]),
            ]
        });
        let rows = if head { self.head_rows } else { self.n };
        self.dispatch(Kernel::RmsNorm, &pipeline, &bg, rows, 1, 1);
    }
}

/// Where a matvec writes.
enum Out {
    Act(Act),
    Logits,
}

/// A buffer range bound to a kernel.
struct Binding {
    buffer: wgpu::Buffer,
    offset: u64,
    size: Option<wgpu::BufferSize>,
}

/// All of `b`.
fn whole(b: &wgpu::Buffer) -> Binding {
    Binding {
        buffer: b.clone(),
        offset: 0,
        size: None,
    }
}

/// The all-rows (`head == false`) or output-head copy of the step's [`Count`].
fn count_binding(s: &GpuSession, head: bool) -> Binding {
    Binding {
        buffer: s.counts.clone(),
        offset: if head { HEAD_COUNT_OFFSET } else { 0 },
        size: wgpu::BufferSize::new(std::mem::size_of::<Count>() as u64),
    }
}

impl Pass<Gpu> for GpuPass<'_> {
    fn embed(&mut self, table: &GpuMatrix) {
        let pipeline = self
            .kernels()
            .pipeline(Kernel::Embed, &[("FORMAT", table.format as u32)]);
        for (i, part) in table.parts.iter().enumerate() {
            let key = BindKey::Embed(table as *const _ as usize, i);
            let bg = self.bind(key, Kernel::Embed, |s| {
                vec![
                    whole(&part.quants),
                    whole(&part.scales),
                    whole(&part.dims[0]),
                    count_binding(s, false),
                    whole(&s.rows),
                    whole(&s.acts[Act::X as usize]),
                ]
            });
            self.dispatch(Kernel::Embed, &pipeline, &bg, self.n, 1, 1);
        }
    }

    fn rms_norm(&mut self, x: Act, weight: &GpuVector, out: Act) {
        self.norm(x, weight, out, false);
    }

    fn lora(&mut self, pair: &GpuLora, x: Act, out: Act) {
        let id = pair as *const _ as usize;
        let int8 = |m: usize| ("INT8", pair.int8[m] as u32);
        let pipeline = self.kernels().pipeline(Kernel::LoraDown, &[int8(0)]);
        let bg = self.bind(BindKey::LoraDown(id, x), Kernel::LoraDown, |s| {
            vec![
                whole(&pair.dims),
                count_binding(s, false),
                whole(&s.rows),
                whole(&s.acts[x as usize]),
                whole(&pair.a),
                whole(&pair.a_scale),
                whole(&s.lora_t),
            ]
        });
        let xyz = [pair.rank as u32, self.n, 1];
        self.dispatch_xyz(Kernel::LoraDown, &pipeline, &bg, xyz);

        let pipeline = self.kernels().pipeline(Kernel::LoraUp, &[int8(1)]);
        let bg = self.bind(BindKey::LoraUp(id, out), Kernel::LoraUp, |s| {
            vec![
                whole(&pair.dims),
                count_binding(s, false),
                whole(&s.rows),
                whole(&s.lora_t),
                whole(&pair.b),
                whole(&pair.b_scale),
                whole(&s.acts[out as usize]),
            ]
        });
        let groups = (self.n * pair.out as u32).div_ceil(256);
        self.dispatch(Kernel::LoraUp, &pipeline, &bg, groups, 1, 1);
    }

    fn linear(&mut self, w: &Linear<Gpu>, x: Act, out: Act) {
        self.matvec(&w.weight, w.bias.as_ref(), x, &Out::Act(out), self.n);
    }

    fn rope(&mut self, x: Act, n_heads: usize, _freqs: Option<&GpuVector>) {
        // The factors are already in the step's cos/sin table.
        let pipeline = self.kernels().pipeline(Kernel::Rope, &[]);
        let bg = self.bind(BindKey::Rope(x), Kernel::Rope, |s| {
            let p = if x == Act::Q {
                &s.params.rope_q
            } else {
                &s.params.rope_k
            };
            vec![
                whole(p),
                count_binding(s, false),
                whole(&s.cos_sin),
                whole(&s.acts[x as usize]),
            ]
        });
        let half = self.config().head_dim / 2;
        let groups = (self.n * (n_heads * half) as u32).div_ceil(256);
        self.dispatch(Kernel::Rope, &pipeline, &bg, groups, 1, 1);
    }

    fn attend(&mut self, layer: usize) {
        let (n_head, kv_dim) = (self.config().n_head as u32, self.config().kv_dim() as u32);

        // 1. This pass's keys and values into their slots.
        let kv = self.s.kv_store;
        let constants = self.kv_constants();
        let pipeline = self.kernels().pipeline(Kernel::KvWrite(kv), &constants);
        let bg = self.bind(BindKey::KvWrite(layer), Kernel::KvWrite(kv), |s| {
            vec![
                whole(&s.params.kv_dim),
                count_binding(s, false),
                whole(&s.rows),
                whole(&s.acts[Act::K as usize]),
                whole(&s.acts[Act::V as usize]),
                whole(&s.k_cache[layer]),
                whole(&s.v_cache[layer]),
            ]
        });
        let groups = if kv == KvStore::Int8 {
            // One thread per (row, KV head), 64 to a workgroup.
            (self.n * self.config().n_kv_head as u32).div_ceil(64)
        } else {
            (self.n * kv_dim / 2).div_ceil(256)
        };
        self.dispatch(Kernel::KvWrite(kv), &pipeline, &bg, groups, 1, 1);

        // 2. Split attention (tiled over rows for prefill), then the merge of the splits.
        let (kernel, key, xyz) = if self.tiled_attention {
            let xyz = [n_head, self.n_splits, self.n.div_ceil(TILED_ROWS)];
            (
                Kernel::AttentionPrefill(kv),
                BindKey::AttentionPrefill(layer),
                xyz,
            )
        } else {
            let xyz = [n_head, self.n, self.n_splits];
            (Kernel::Attention(kv), BindKey::Attention(layer), xyz)
        };
        let pipeline = self.kernels().pipeline(kernel, &constants);
        let bg = self.bind(key, kernel, |s| {
            vec![
                whole(&s.params.attn),
                count_binding(s, false),
                whole(&s.rows),
                whole(&s.acts[Act::Q as usize]),
                whole(&s.k_cache[layer]),
                whole(&s.v_cache[layer]),
                whole(&s.partials),
            ]
        });
        self.dispatch_xyz(kernel, &pipeline, &bg, xyz);

        let pipeline = self.kernels().pipeline(Kernel::AttentionMerge, &[]);
        let bg = self.bind(BindKey::Merge, Kernel::AttentionMerge, |s| {
            vec![
                whole(&s.params.attn),
                count_binding(s, false),
                whole(&s.partials),
                whole(&s.acts[Act::Att as usize]),
            ]
        });
        let xyz = [n_head, self.n, 1];
        self.dispatch_xyz(Kernel::AttentionMerge, &pipeline, &bg, xyz);
    }

    fn add(&mut self, x: Act, y: Act) {
        self.elementwise(Kernel::Add, BindKey::Add(x, y), x, y);
    }

    fn swiglu(&mut self) {
        self.elementwise(Kernel::Swiglu, BindKey::Swiglu, Act::Gate, Act::Up);
    }

    fn output(&mut self, norm: &GpuVector, head: &GpuMatrix, want: Logits) {
        if self.pool {
            // Every row's final hidden state into H, summed into the pooled features
            // (before the head's norm overwrites the first rows of H).
            self.norm(Act::X, norm, Act::H, false);
            let pipeline = self.kernels().pipeline(Kernel::Pool, &[]);
            let bg = self.bind(BindKey::Pool, Kernel::Pool, |s| {
                vec![
                    whole(&s.params.width_d),
                    count_binding(s, false),
                    whole(&s.acts[Act::H as usize]),
                    whole(&s.pooled),
                ]
            });
            let groups = (self.config().n_embd as u32).div_ceil(256);
            self.dispatch(Kernel::Pool, &pipeline, &bg, groups, 1, 1);
        }
        if want == Logits::None {
            return;
        }
        self.norm(Act::X, norm, Act::H, true);
        self.matvec(head, None, Act::H, &Out::Logits, self.head_rows);
        self.sample();
    }
}

impl GpuPass<'_> {
    /// Each output row's token, picked from its logits by its draw.
    fn sample(&mut self) {
        let pipeline = self.kernels().pipeline(Kernel::Sample, &[]);
        let bg = self.bind(BindKey::Sample, Kernel::Sample, |s| {
            vec![
                whole(&s.params.vocab),
                count_binding(s, true),
                whole(&s.logits),
                whole(&s.draws),
                whole(&s.ids),
            ]
        });
        self.dispatch(Kernel::Sample, &pipeline, &bg, self.head_rows, 1, 1);
    }
}
