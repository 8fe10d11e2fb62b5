//! The key/value cache of one sequence, kept outside the model so that several modes
//! and candidates can share a prompt's cache without copying the model.
//!
//! A cache may continue a frozen, shared prefix ([`KvCache::fork`]): positions
//! `0..prefix` are read from the prefix (one copy for every candidate), the rest are
//! the cache's own. N candidates over a prompt of P tokens then hold P + N*T positions,
//! not N*(P+T).

use std::sync::Arc;

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
    /// The shared prefix this cache continues, if any: positions `0..prefix.len()`.
    prefix: Option<Arc<KvCache>>,
    /// This cache's own positions, from `prefix_len()` on.
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    kv_dim: usize,
}

/// Keys and values of one layer as the attention reads them: the shared prefix's
/// segment, then the sequence's own; each (positions, kv_dim).
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    pub segments: [(&'a [f32], &'a [f32]); 2],
}

impl<'a> KvView<'a> {
    /// One contiguous run of keys and values.
    pub fn single(k: &'a [f32], v: &'a [f32]) -> Self {
        KvView {
            segments: [(&[], &[]), (k, v)],
        }
    }
}

impl KvCache {
    /// An empty cache for `cfg` that will hold at most `capacity` positions. Memory is
    /// taken as positions are appended, not up front.
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        KvCache {
            prefix: None,
            layers: vec![LayerKv::default(); cfg.n_layer],
            len: 0,
            capacity,
            kv_dim: cfg.kv_dim(),
        }
    }

    /// A cache that continues `shared` (which is not copied) and may grow to `capacity`
    /// positions in all. `shared` must not itself continue a prefix.
    pub fn fork(shared: &Arc<KvCache>, capacity: usize) -> Result<Self> {
        if shared.prefix.is_some() {
            return Err(Error::InvalidArgument(
                "a forked cache cannot be shared again".into(),
            ));
        }
        if capacity < shared.len {
            return Err(Error::ContextOverflow {
                tokens: shared.len,
                capacity,
            });
        }
        Ok(KvCache {
            prefix: Some(Arc::clone(shared)),
            layers: vec![LayerKv::default(); shared.layers.len()],
            len: shared.len,
            capacity,
            kv_dim: shared.kv_dim,
        })
    }

    /// Positions read from the shared prefix.
    pub fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len)
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
        let own = (self.len - self.prefix_len()) * self.kv_dim;
        let l = &mut self.layers[layer];
        l.k.truncate(own);
        l.v.truncate(own);
        l.k.extend_from_slice(k);
        l.v.extend_from_slice(v);
    }

    /// Keys and values of `layer` including any appended but uncommitted positions:
    /// the prefix's, then this cache's own.
    pub fn layer(&self, layer: usize) -> KvView<'_> {
        let own = &self.layers[layer];
        let (pk, pv): (&[f32], &[f32]) = match &self.prefix {
            Some(p) => (&p.layers[layer].k, &p.layers[layer].v),
            None => (&[], &[]),
        };
        KvView {
            segments: [(pk, pv), (&own.k, &own.v)],
        }
    }

    /// Makes `n` appended positions part of the sequence.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops every position from `len` on (rewinding the sequence; never into the
    /// shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len).max(self.prefix_len());
        let own = (self.len - self.prefix_len()) * self.kv_dim;
        for l in &mut self.layers {
            l.k.truncate(own);
            l.v.truncate(own);
        }
    }

    /// Bytes held by this cache's own keys and values (a shared prefix not counted:
    /// it is held once, by the cache it was made from).
    pub fn n_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>())
            .sum()
    }
}
