// Combines the splits of attention.wgsl: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
// One workgroup per (head, row). Prepended: common.wgsl.

@group(0) @binding(0) var<uniform> attn: Attn;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> partials: array<f32>;      // (n, n_heads, n_splits, head_dim + 2)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // (n, n_heads * head_dim)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let r = wg.y;
    let hd = attn.head_dim;
    let stride = hd + 2u;
    let base = (r * attn.n_heads + h) * count.n_splits * stride;
    var m = -3.0e38;
    for (var s = 0u; s < count.n_splits; s++) {
        m = max(m, partials[base + s * stride]);
    }
    var l = 0.0;
    for (var s = 0u; s < count.n_splits; s++) {
        l += partials[base + s * stride + 1u] * exp(partials[base + s * stride] - m);
    }
    for (var d = t; d < hd; d += 64u) {
        var a = 0.0;
        for (var s = 0u; s < count.n_splits; s++) {
            a += partials[base + s * stride + 2u + d] * exp(partials[base + s * stride] - m);
        }
        out[r * attn.n_heads * hd + h * hd + d] = a / l;
    }
}
