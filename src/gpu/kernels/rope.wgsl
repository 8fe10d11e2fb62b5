// Rotates every head of x (n, n_heads * head_dim) in place by its row's angles, read
// from a (n, head_dim / 2) cos/sin table the host computes per step exactly as the
// CPU backend does. One thread per rotated pair. Prepended: common.wgsl.

struct Rope {
    n_heads: u32,
    head_dim: u32,
    halves: u32,   // 1: pairs (i, i + d/2) (NeoX); 0: pairs (2i, 2i + 1)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> rope: Rope;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> cos_sin: array<vec2<f32>>;   // (n, head_dim / 2)
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let half = rope.head_dim / 2u;
    let per_row = rope.n_heads * half;
    if (i >= count.n * per_row) {
        return;
    }
    let r = i / per_row;
    let head = (i % per_row) / half;
    let p = i % half;
    let cs = cos_sin[r * half + p];
    let base = r * rope.n_heads * rope.head_dim + head * rope.head_dim;
    var a = base + 2u * p;
    var b = a + 1u;
    if (rope.halves != 0u) {
        a = base + p;
        b = a + half;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
}
