// KV cache words (prepended to the kernels that read or write the cache; the kernel
// declares `k_cache` and `v_cache` as array<KvWord>): f32, one value per word.

alias KvWord = f32;

fn k_at(i: u32) -> f32 {
    return k_cache[i];
}

fn v_at(i: u32) -> f32 {
    return v_cache[i];
}
