// ids[r] = argmax of logits row r (lowest index on ties), one workgroup per row, so a
// greedy decode step reads back one u32 per row instead of the vocabulary's logits.
// Prepended: common.wgsl.

@group(0) @binding(0) var<uniform> dims: Width;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> logits: array<f32>;     // (n, vocab)
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;  // (n)

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let r = wg.x;
    if (r >= count.n) {
        return;
    }
    let base = r * dims.width;
    var bv = -3.4e38;
    var bi = 0xFFFFFFFFu;
    for (var i = t; i < dims.width; i += WG) {
        let v = logits[base + i];
        if (v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[t] = bv;
    best_i[t] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let ov = best_v[t + s];
            let oi = best_i[t + s];
            if (ov > best_v[t] || (ov == best_v[t] && oi < best_i[t])) {
                best_v[t] = ov;
                best_i[t] = oi;
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        ids[r] = min(best_i[0], dims.width - 1u);
    }
}
