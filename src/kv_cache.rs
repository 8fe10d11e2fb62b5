//! The key/value cache of one sequence, kept outside the model so that several modes
//! and candidates can share a prompt's cache without copying the model.

use crate::error::{Error, Result};
use crate::model::Config;

/// Keys and values of one layer: each (positions, n_kv_head * head_dim), row-major.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The cache of one sequence: positions `0..len` of every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    kv_dim: usize,
}

impl KvCache {
    /// An empty cache for `cfg` that will hold at most `capacity` positions. Memory is
    /// taken as positions are appended, not up front.
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        KvCache {
            layers: vec![LayerKv::default(); cfg.n_layer],
            len: 0,
            capacity,
            kv_dim: cfg.kv_dim(),
        }
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fails when `n` more positions would not fit.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(Error::ContextOverflow {
                tokens: self.len + n,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Appends `k` and `v` (n, kv_dim) of layer `layer` for the positions being
    /// added; the positions become visible to [`KvCache::len`] on [`KvCache::commit`].
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        l.k.truncate(self.len * self.kv_dim);
        l.v.truncate(self.len * self.kv_dim);
        l.k.extend_from_slice(k);
        l.v.extend_from_slice(v);
    }

    /// Keys and values of `layer` including any appended but uncommitted positions.
    pub fn layer(&self, layer: usize) -> &LayerKv {
        &self.layers[layer]
    }

    /// Makes `n` appended positions part of the sequence.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops every position from `len` on (rewinding the sequence).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for l in &mut self.layers {
            l.k.truncate(self.len * self.kv_dim);
            l.v.truncate(self.len * self.kv_dim);
        }
    }

    /// Bytes held by keys and values.
    pub fn n_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>())
            .sum()
    }
}
