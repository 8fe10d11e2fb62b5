// y = x W^T (+ bias) for M activation rows at once: every weight unit is read and
// dequantized once per workgroup and used for all M rows, so decoding M candidates
// costs one pass over the weights. Prefill uses the same kernel with M = 16 row tiles
// along z (weights read once per 16 tokens).
//
// Grid: (output-row groups of ROWS, folded into y past the per-dimension limit,
// row tiles of M).
// Prepended: common.wgsl, quant.wgsl (bindings 0-1), and the row reduction:
// matvec_reduce_subgroup.wgsl where the adapter has subgroups, else
// matvec_reduce_shared.wgsl.

@group(0) @binding(2) var<uniform> dims: Dims;
@group(0) @binding(3) var<uniform> count: Count;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;   // (n, k_units * 8)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;   // (n, y_stride)
@group(0) @binding(6) var<storage, read> bias: array<f32>;      // (y_stride), or a dummy

override M: u32 = 1u;        // activation rows per workgroup, 1..MAX_M
const MAX_M: u32 = 16u;
const WG: u32 = 64u;
// Threads sharing one output row: 16, or with subgroups the adapter's smallest
// subgroup size when that is less (so a row's lanes sit in one subgroup); 1 on a
// software adapter (a CPU).
override LANES: u32 = 16u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let out_row = (wg.x + wg.y * nwg.x) * (WG / LANES) + tid / LANES;
    let lane = tid % LANES;
    if (M == 1u) {
        one_row(out_row, lane, wg.z, tid);
        return;
    }
    let m0 = wg.z * M;

    // 1. Each lane takes every LANES-th unit of its output row.
    var acc: array<f32, MAX_M>;
    if (out_row < dims.n_out) {
        let x_stride = dims.k_units * 8u;
        for (var u = lane; u < dims.k_units; u += LANES) {
            let unit = out_row * dims.k_units + u;
            if (is_packed_format()) {
                let p = load_packed(unit);
                for (var m = 0u; m < M; m++) {
                    if (m0 + m < count.n) {
                        acc[m] += packed_dot(p, (m0 + m) * x_stride + u * 8u);
                    }
                }
            } else {
                let w = unit_weights(unit);
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
    }

    // 2. Sum the LANES partial sums of each output row (matvec_reduce_*.wgsl): lane 0
    // gets the row's M sums.
    let sums = reduce_lanes(acc, tid, lane);

    // 3. Lane 0 writes the row's M outputs.
    if (lane == 0u && out_row < dims.n_out) {
        var b = 0.0;
        if (dims.has_bias != 0u) {
            b = bias[dims.y_offset + out_row];
        }
        for (var m = 0u; m < M; m++) {
            if (m0 + m < count.n) {
                y[(m0 + m) * dims.y_stride + dims.y_offset + out_row] = sums[m] + b;
            }
        }
    }
}

// M = 1 (one decode stream, and row tiles of one): the same with one scalar sum per
// thread. An array indexed in loops is what compilers without full unrolling (such as
// SwiftShader's, Chrome's WebGPU on the CPU) keep in memory: there this path makes
// the matvec 2.4x faster.
fn one_row(out_row: u32, lane: u32, m: u32, tid: u32) {
    var acc = 0.0;
    if (out_row < dims.n_out && m < count.n) {
        let xb0 = m * dims.k_units * 8u;
        for (var u = lane; u < dims.k_units; u += LANES) {
            let unit = out_row * dims.k_units + u;
            if (is_packed_format()) {
                acc += packed_dot(load_packed(unit), xb0 + u * 8u);
            } else {
                let w = unit_weights(unit);
                var s = 0.0;
                for (var i = 0u; i < 8u; i++) {
                    s += dot(w[i], x[xb0 + u * 8u + i]);
                }
                acc += s;
            }
        }
    }
    let sum = reduce_lane(acc, tid, lane);
    if (lane == 0u && out_row < dims.n_out && m < count.n) {
        var b = 0.0;
        if (dims.has_bias != 0u) {
            b = bias[dims.y_offset + out_row];
        }
        y[m * dims.y_stride + dims.y_offset + out_row] = sum + b;
    }
}

// The dot product of a packed unit with the 32 activations at x[xb..xb + 8]: the
// integer codes are dotted first and the affine applied once, scale * (q . x) +
// offset * sum(x).
fn packed_dot(p: Packed, xb: u32) -> f32 {
    let x0 = x[xb];
    let x1 = x[xb + 1u];
    let x2 = x[xb + 2u];
    let x3 = x[xb + 3u];
    let x4 = x[xb + 4u];
    let x5 = x[xb + 5u];
    let x6 = x[xb + 6u];
    let x7 = x[xb + 7u];
    if (FORMAT == FMT_Q8_0) {
        let q = dot(i8x4(p.lo.x), x0) + dot(i8x4(p.lo.y), x1) + dot(i8x4(p.lo.z), x2)
              + dot(i8x4(p.lo.w), x3) + dot(i8x4(p.hi.x), x4) + dot(i8x4(p.hi.y), x5)
              + dot(i8x4(p.hi.z), x6) + dot(i8x4(p.hi.w), x7);
        return p.affine.x * q;
    }
    // Byte i of word j holds weight 4j + i (low nibble) and 16 + 4j + i (high).
    if (has_high_bits()) {
        // Codes of 5 or 6 bits, two scales (Q6_K's 16-weight sub-blocks; Q5's equal):
        // each half dotted and scaled apart.
        let qa = dot(nibbles(p.lo.x, 0u) + high_bits(p, 0u, 0u), x0)
               + dot(nibbles(p.lo.y, 0u) + high_bits(p, 0u, 1u), x1)
               + dot(nibbles(p.lo.z, 0u) + high_bits(p, 0u, 2u), x2)
               + dot(nibbles(p.lo.w, 0u) + high_bits(p, 0u, 3u), x3);
        let qb = dot(nibbles(p.lo.x, 4u) + high_bits(p, 1u, 0u), x4)
               + dot(nibbles(p.lo.y, 4u) + high_bits(p, 1u, 1u), x5)
               + dot(nibbles(p.lo.z, 4u) + high_bits(p, 1u, 2u), x6)
               + dot(nibbles(p.lo.w, 4u) + high_bits(p, 1u, 3u), x7);
        let xa = (x0 + x1) + (x2 + x3);
        let xb = (x4 + x5) + (x6 + x7);
        return p.affine.x * qa + p.affine.y * (xa.x + xa.y + xa.z + xa.w)
             + p.affine_hi.x * qb + p.affine_hi.y * (xb.x + xb.y + xb.z + xb.w);
    }
    let q = dot(nibbles(p.lo.x, 0u), x0) + dot(nibbles(p.lo.y, 0u), x1)
          + dot(nibbles(p.lo.z, 0u), x2) + dot(nibbles(p.lo.w, 0u), x3)
          + dot(nibbles(p.lo.x, 4u), x4) + dot(nibbles(p.lo.y, 4u), x5)
          + dot(nibbles(p.lo.z, 4u), x6) + dot(nibbles(p.lo.w, 4u), x7);
    let xs = (x0 + x1) + (x2 + x3) + (x4 + x5) + (x6 + x7);
    return p.affine.x * q + p.affine.y * (xs.x + xs.y + xs.z + xs.w);
}
