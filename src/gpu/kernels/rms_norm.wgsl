// out[r] = x[first_row + r] / rms(x[first_row + r]) * weight, one workgroup per row.
// Prepended: common.wgsl.

struct Norm {
    width: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> norm: Norm;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> x: array<f32>;          // (rows, width)
@group(0) @binding(3) var<storage, read> weight: array<f32>;     // (width)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (n, width)

const WG: u32 = 256u;
var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    let src = (count.first_row + r) * norm.width;
    var s = 0.0;
    for (var i = tid; i < norm.width; i += WG) {
        let v = x[src + i];
        s += v * v;
    }
    sums[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            sums[tid] += sums[tid + stride];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(sums[0] / f32(norm.width) + norm.eps);
    let dst = r * norm.width;
    for (var i = tid; i < norm.width; i += WG) {
        out[dst + i] = x[src + i] * scale * weight[i];
    }
}
