// The matvec's row reduction without subgroups: through workgroup memory, a tree of
// log2(LANES) steps with a barrier each. Must be called by every thread.

var<workgroup> partial: array<f32, 1024>;   // (MAX_M, WG)

fn reduce_lanes(acc: array<f32, MAX_M>, tid: u32, lane: u32) -> array<f32, MAX_M> {
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
    var out: array<f32, MAX_M>;
    for (var m = 0u; m < M; m++) {
        out[m] = partial[m * WG + tid];
    }
    return out;
}

// One sum per thread (M = 1).
fn reduce_lane(v: f32, tid: u32, lane: u32) -> f32 {
    partial[tid] = v;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    return partial[tid];
}
