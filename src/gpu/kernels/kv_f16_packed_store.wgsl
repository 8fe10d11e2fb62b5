// Stores values 2p and 2p + 1 of a key and a value row (one packed word each).
fn kv_store(p: u32, k: vec2<f32>, v: vec2<f32>) {
    k_cache[p] = pack2x16float(k);
    v_cache[p] = pack2x16float(v);
}
