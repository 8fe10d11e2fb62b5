// KV cache words: f16 (the `shader-f16` feature), one value per word, half the bytes
// of f32. The source starts with `enable f16;`.

alias KvWord = f16;

fn k_at(i: u32) -> f32 {
    return f32(k_cache[i]);
}

fn v_at(i: u32) -> f32 {
    return f32(v_cache[i]);
}
