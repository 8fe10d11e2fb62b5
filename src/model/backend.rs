//! What the one transformer needs from a backend: where weights live, and the ops of a
//! forward pass. The CPU backend runs each op as it is called; the GPU backend records
//! it into a command buffer. [`super::Model::run`] is written once against these traits.

use super::{Config, Linear, Logits};
use crate::cpu::Matrix;
use crate::error::Result;
use crate::lora::Target;

/// The activations of a forward pass, each (rows, width): named, so a backend can keep
/// them preallocated and the transformer can say which one an op reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// (rows, d) the residual stream.
    X,
    /// (rows, d) the normed input of a sub-layer.
    H,
    /// (rows, n_head * head_dim)
    Q,
    /// (rows, n_kv_head * head_dim)
    K,
    /// (rows, n_kv_head * head_dim)
    V,
    /// (rows, n_head * head_dim) attention output before projection.
    Att,
    /// (rows, d) a sub-layer's output projection.
    Proj,
    /// (rows, n_ff)
    Gate,
    /// (rows, n_ff)
    Up,
}

impl Act {
    /// Every activation, in declaration order (`Act::ALL[a as usize] == a`).
    pub const ALL: [Act; 9] = [
        Act::X,
        Act::H,
        Act::Q,
        Act::K,
        Act::V,
        Act::Att,
        Act::Proj,
        Act::Gate,
        Act::Up,
    ];

    /// Width of this activation's rows under `c`.
    pub fn width(self, c: &Config) -> usize {
        match self {
            Act::X | Act::H | Act::Proj => c.n_embd,
            Act::Q | Act::Att => c.n_head * c.head_dim,
            Act::K | Act::V => c.kv_dim(),
            Act::Gate | Act::Up => c.n_ff,
        }
    }
}

/// Where weights live and in which form.
pub trait Backend {
    /// A weight matrix (rows, cols).
    type Matrix;
    /// A vector of f32 (norm weights, biases, RoPE factors).
    type Vector;
    /// The low-rank update of one linear layer (a LoRA adapter's A and scaled B).
    type Lora;
    /// Bytes a matrix occupies.
    fn matrix_bytes(m: &Self::Matrix) -> usize;
    /// Bytes a vector occupies.
    fn vector_bytes(v: &Self::Vector) -> usize;
}

/// Turns tensors read from a file (in CPU form) into a backend's form, one at a time,
/// so that the whole model never sits in memory twice.
pub trait Upload<B: Backend> {
    fn matrix(&mut self, name: &str, m: Matrix) -> Result<B::Matrix>;
    fn vector(&mut self, name: &str, v: Vec<f32>) -> Result<B::Vector>;
}

/// The ops of one forward pass over some rows (tokens), in the order the transformer
/// calls them. A pass knows its rows, their positions and the KV cache they extend.
pub trait Pass<B: Backend> {
    /// `X <- table[token of each row]`.
    fn embed(&mut self, table: &B::Matrix);
    /// `out <- rms_norm(x) * weight`.
    fn rms_norm(&mut self, x: Act, weight: &B::Vector, out: Act);
    /// `out <- x W^T + b`.
    fn linear(&mut self, w: &Linear<B>, x: Act, out: Act);
    /// `out <- out + B (A x)` for each row: a LoRA adapter on the last linear layer.
    fn lora(&mut self, pair: &B::Lora, x: Act, out: Act);
    /// Rotates the `n_heads` heads of `x` in place by each row's position.
    fn rope(&mut self, x: Act, n_heads: usize, freqs: Option<&B::Vector>);
    /// Appends `K`, `V` to the cache of `layer`, then `Att <- attention(Q, cache)`.
    fn attend(&mut self, layer: usize);
    /// `x <- x + y`.
    fn add(&mut self, x: Act, y: Act);
    /// `Gate <- silu(Gate) * Up`.
    fn swiglu(&mut self);
    /// Final norm of `X` and the output head, for the rows `want` names.
    fn output(&mut self, norm: &B::Vector, head: &B::Matrix, want: Logits);
}

/// An adapter's updates on backend `B`: `layers[i][t as usize]` for block `i` and
/// target `t` (None where the adapter leaves a layer alone).
pub type LoraLayers<B> = [[Option<<B as Backend>::Lora>; 7]];

/// The update of block `layer`'s target `t`, when there is one.
pub fn lora_of<B: Backend>(
    lora: Option<&LoraLayers<B>>,
    layer: usize,
    t: Target,
) -> Option<&B::Lora> {
    lora?.get(layer)?[t as usize].as_ref()
}
