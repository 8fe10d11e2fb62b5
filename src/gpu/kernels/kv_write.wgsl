// Writes each row's key and value (n, kv_dim) into its cache slot of one layer, two
// values per thread, in the cache's word format (kv_*.wgsl, prepended with its
// kv_*_store.wgsl). Prepended: common.wgsl.

struct KvDims {
    kv_dim: u32, // even
}

@group(0) @binding(0) var<uniform> kv: KvDims;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> k_new: array<f32>;              // (n, kv_dim)
@group(0) @binding(4) var<storage, read> v_new: array<f32>;              // (n, kv_dim)
@group(0) @binding(5) var<storage, read_write> k_cache: array<KvWord>;   // (slots, kv_dim)
@group(0) @binding(6) var<storage, read_write> v_cache: array<KvWord>;   // (slots, kv_dim)

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * nwg.x * 256u; // pair of values
    let half_dim = kv.kv_dim / 2u;
    if (p >= count.n * half_dim) {
        return;
    }
    let r = p / half_dim;
    let i = 2u * p;
    let dst = rows[r].slot * half_dim + p % half_dim;
    kv_store(dst, vec2<f32>(k_new[i], k_new[i + 1u]), vec2<f32>(v_new[i], v_new[i + 1u]));
}
