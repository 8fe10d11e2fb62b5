// The matvec's row reduction with subgroups: a butterfly of subgroup shuffles among
// the LANES threads of a row (LANES divides the subgroup size, so they share one
// subgroup): no workgroup memory, no barrier. Must be called by every thread.

fn reduce_lanes(acc: array<f32, MAX_M>, tid: u32, lane: u32) -> array<f32, MAX_M> {
    var out = acc;
    for (var m = 0u; m < M; m++) {
        var v = out[m];
        for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
            v += subgroupShuffleXor(v, stride);
        }
        out[m] = v;
    }
    return out;
}

// One sum per thread (M = 1).
fn reduce_lane(v: f32, tid: u32, lane: u32) -> f32 {
    var s = v;
    for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
        s += subgroupShuffleXor(s, stride);
    }
    return s;
}
