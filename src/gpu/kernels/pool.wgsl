// pooled[i] += sum over the pass's rows r of h[r, i]: the switcher's features (the
// prompt's final hidden states after the final norm), summed as the prompt is
// prefilled. One thread per column. Prepended: common.wgsl.

@group(0) @binding(0) var<uniform> dims: Width;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> h: array<f32>;             // (n, width)
@group(0) @binding(3) var<storage, read_write> pooled: array<f32>;  // (width)

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= dims.width) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < count.n; r++) {
        s += h[r * dims.width + i];
    }
    pooled[i] += s;
}
