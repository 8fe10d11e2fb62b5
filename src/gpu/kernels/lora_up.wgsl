// y[r, o] += sum_j b[o, j] * t[r, j]: the second, thin matmul of a LoRA update (B is
// (out, rank), already scaled), for the rows whose `lora` flag is set. One thread per
// (r, o). Prepended: common.wgsl.

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
@group(0) @binding(4) var<storage, read> b: array<f32>;        // (out, rank)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;  // (n, out)

const MAX_RANK: u32 = 64u;

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
    let bo = o * dims.rank;
    for (var j = 0u; j < dims.rank; j++) {
        s += b[bo + j] * t[tr + j];
    }
    y[i] += s;
}
