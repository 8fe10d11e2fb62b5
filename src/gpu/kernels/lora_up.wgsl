// y[r, o] += b_scale[o] * sum_j b[o, j] * t[r, j]: the second, thin matmul of a LoRA
// update (B is (out, rank), the adapter's scale folded in: with INT8, i8 four to a
// word, rows padded to whole words; else f32 bits, scales of one), for the rows whose
// `lora` flag is set. One thread per (r, o). Prepended: common.wgsl.

struct LoraDims {
    inp: u32,
    out: u32,
    rank: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: LoraDims;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> t: array<f32>;        // (n, MAX_RANK)
@group(0) @binding(4) var<storage, read> b: array<u32>;        // (out, rank): see above
@group(0) @binding(5) var<storage, read> b_scale: array<f32>;  // (out)
@group(0) @binding(6) var<storage, read_write> y: array<f32>;  // (n, out)

const MAX_RANK: u32 = 64u;
override INT8: u32 = 1u; // gpu::lora::GpuLora::int8

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let r = i / dims.out;
    let o = i % dims.out;
    if (r >= count.n || rows[r].lora == 0u) {
        return;
    }
    var s = 0.0;
    let tr = r * MAX_RANK;
    if (INT8 == 1u) {
        let words = (dims.rank + 3u) / 4u;
        for (var w = 0u; w < words; w++) {
            let q = b[o * words + w];
            for (var k = 0u; k < min(4u, dims.rank - 4u * w); k++) {
                s += t[tr + 4u * w + k] * i8_lane(q, k);
            }
        }
    } else {
        for (var j = 0u; j < dims.rank; j++) {
            s += t[tr + j] * bitcast<f32>(b[o * dims.rank + j]);
        }
    }
    y[i] += b_scale[o] * s;
}
