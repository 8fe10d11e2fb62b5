// Writes each row's key and value (n, kv_dim) into its cache slot of one layer.
// Prepended: common.wgsl.

struct KvDims {
    kv_dim: u32,
}

@group(0) @binding(0) var<uniform> kv: KvDims;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> k_new: array<f32>;             // (n, kv_dim)
@group(0) @binding(4) var<storage, read> v_new: array<f32>;             // (n, kv_dim)
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;     // (slots, kv_dim)
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;     // (slots, kv_dim)

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= count.n * kv.kv_dim) {
        return;
    }
    let r = i / kv.kv_dim;
    let dst = rows[r].slot * kv.kv_dim + i % kv.kv_dim;
    k_cache[dst] = k_new[i];
    v_cache[dst] = v_new[i];
}
