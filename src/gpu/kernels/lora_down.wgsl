// t[r, j] = a_scale[j] * sum_i x[r, i] * a[j, i]: the first, thin matmul of a LoRA
// update (A is (rank, in): with INT8, i8 four to a word, rows padded to whole words;
// else f32 bits, scales of one), for the rows whose `lora` flag is set (0 for the
// others). One workgroup per (j, r). Prepended: common.wgsl.

struct LoraDims {
    inp: u32,   // in features
    out: u32,   // out features
    rank: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: LoraDims;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> x: array<f32>;        // (n, in)
@group(0) @binding(4) var<storage, read> a: array<u32>;        // (rank, in): see above
@group(0) @binding(5) var<storage, read> a_scale: array<f32>;  // (rank)
@group(0) @binding(6) var<storage, read_write> t: array<f32>;  // (n, MAX_RANK)

override INT8: u32 = 1u; // gpu::lora::GpuLora::int8
const WG: u32 = 64u;
const MAX_RANK: u32 = 64u; // gpu::lora::MAX_GPU_RANK
var<workgroup> sums: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let j = wg.x;
    let r = wg.y;
    if (r >= count.n || rows[r].lora == 0u) {
        return;
    }
    let xr = r * dims.inp;
    var s = 0.0;
    if (INT8 == 1u) {
        let words = (dims.inp + 3u) / 4u;
        for (var w = tid; w < words; w += WG) {
            let q = a[j * words + w];
            let i = xr + 4u * w;
            for (var k = 0u; k < min(4u, dims.inp - 4u * w); k++) {
                s += x[i + k] * i8_lane(q, k);
            }
        }
    } else {
        for (var i = tid; i < dims.inp; i += WG) {
            s += x[xr + i] * bitcast<f32>(a[j * dims.inp + i]);
        }
    }
    sums[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            sums[tid] += sums[tid + stride];
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        t[r * MAX_RANK + j] = a_scale[j] * sums[0];
    }
}
