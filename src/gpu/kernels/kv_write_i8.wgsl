// Writes each row's key and value (n, KV_DIM) into its slot of one layer's INT8 cache
// (kv_i8.wgsl): one thread per (row, KV head) finds the head's largest |value| (its
// scale), then packs the head's values four to a word. Prepended: common.wgsl,
// kv_i8.wgsl.

struct KvDims {
    kv_dim: u32,
}

@group(0) @binding(0) var<uniform> kv: KvDims;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> k_new: array<f32>;              // (n, kv_dim)
@group(0) @binding(4) var<storage, read> v_new: array<f32>;              // (n, kv_dim)
@group(0) @binding(5) var<storage, read_write> k_cache: array<KvWord>;   // (slots, stride)
@group(0) @binding(6) var<storage, read_write> v_cache: array<KvWord>;   // (slots, stride)

fn new_value(of_v: bool, i: u32) -> f32 {
    if (of_v) {
        return v_new[i];
    }
    return k_new[i];
}

fn put(of_v: bool, at: u32, w: u32) {
    if (of_v) {
        v_cache[at] = w;
    } else {
        k_cache[at] = w;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let heads = KV_DIM / HEAD_DIM;
    let t = gid.x;
    if (t >= count.n * heads) {
        return;
    }
    let r = t / heads;
    let h = t % heads;
    let src = r * KV_DIM + h * HEAD_DIM;
    let base = rows[r].slot * kv_stride();
    for (var which = 0u; which < 2u; which++) {
        let of_v = which == 1u;
        var amax = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
            amax = max(amax, abs(new_value(of_v, src + d)));
        }
        let inv = select(0.0, 1.0 / amax, amax > 0.0);
        for (var d = 0u; d < HEAD_DIM; d += 4u) {
            let q = vec4<f32>(
                new_value(of_v, src + d),
                new_value(of_v, src + d + 1u),
                new_value(of_v, src + d + 2u),
                new_value(of_v, src + d + 3u),
            ) * inv;
            put(of_v, base + (h * HEAD_DIM + d) / 4u, pack4x8snorm(q));
        }
        put(of_v, base + KV_DIM / 4u + h, bitcast<u32>(amax));
    }
}
