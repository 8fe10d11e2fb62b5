// Stores values 2p and 2p + 1 of a key and a value row (f16 words).
fn kv_store(p: u32, k: vec2<f32>, v: vec2<f32>) {
    k_cache[2u * p] = f16(k.x);
    k_cache[2u * p + 1u] = f16(k.y);
    v_cache[2u * p] = f16(v.x);
    v_cache[2u * p + 1u] = f16(v.y);
}
