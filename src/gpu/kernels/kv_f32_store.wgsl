// Stores values 2p and 2p + 1 of a key and a value row (f32 words).
fn kv_store(p: u32, k: vec2<f32>, v: vec2<f32>) {
    k_cache[2u * p] = k.x;
    k_cache[2u * p + 1u] = k.y;
    v_cache[2u * p] = v.x;
    v_cache[2u * p + 1u] = v.y;
}
