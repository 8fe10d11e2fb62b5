// y = x W^T (+ bias) for M activation rows at once: every weight unit is read and
// dequantized once per workgroup and used for all M rows, so decoding M candidates
// costs one pass over the weights. Prefill uses the same kernel with M = 16 row tiles
// along z (weights read once per 16 tokens).
//
// Grid: (output-row groups of ROWS, folded into y past the per-dimension limit,
// row tiles of M).
// Prepended: common.wgsl, quant.wgsl (bindings 0-1).

@group(0) @binding(2) var<uniform> dims: Dims;
@group(0) @binding(3) var<uniform> count: Count;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;   // (n, k_units * 8)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;   // (n, y_stride)
@group(0) @binding(6) var<storage, read> bias: array<f32>;      // (y_stride), or a dummy

override M: u32 = 1u;        // activation rows per workgroup, 1..MAX_M
const MAX_M: u32 = 16u;
const WG: u32 = 64u;
const LANES: u32 = 16u;      // threads sharing one output row
const ROWS: u32 = 4u;        // output rows per workgroup (WG / LANES)

var<workgroup> partial: array<f32, 1024>;   // (MAX_M, WG)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let out_row = (wg.x + wg.y * nwg.x) * ROWS + tid / LANES;
    let lane = tid % LANES;
    let m0 = wg.z * M;

    // 1. Each lane takes every LANES-th unit of its output row.
    var acc: array<f32, MAX_M>;
    if (out_row < dims.n_out) {
        let x_stride = dims.k_units * 8u;
        for (var u = lane; u < dims.k_units; u += LANES) {
            let w = unit_weights(out_row * dims.k_units + u);
            for (var m = 0u; m < M; m++) {
                if (m0 + m < count.n) {
                    let xb = (m0 + m) * x_stride + u * 8u;
                    var s = 0.0;
                    for (var i = 0u; i < 8u; i++) {
                        s += dot(w[i], x[xb + i]);
                    }
                    acc[m] += s;
                }
            }
        }
    }

    // 2. Sum the LANES partial sums of each output row.
    for (var m = 0u; m < M; m++) {
        partial[m * WG + tid] = acc[m];
    }
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            for (var m = 0u; m < M; m++) {
                partial[m * WG + tid] += partial[m * WG + tid + stride];
            }
        }
        workgroupBarrier();
    }

    // 3. Lane 0 writes the row's M outputs.
    if (lane == 0u && out_row < dims.n_out) {
        var b = 0.0;
        if (dims.has_bias != 0u) {
            b = bias[dims.y_offset + out_row];
        }
        for (var m = 0u; m < M; m++) {
            if (m0 + m < count.n) {
                y[(m0 + m) * dims.y_stride + dims.y_offset + out_row] = partial[m * WG + tid] + b;
            }
        }
    }
}
