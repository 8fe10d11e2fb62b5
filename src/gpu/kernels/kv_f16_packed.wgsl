// KV cache words: two f16 values packed in a u32 (pack2x16float), for adapters without
// `shader-f16`: the same values and bytes as kv_f16.wgsl.

alias KvWord = u32;

fn k_at(i: u32) -> f32 {
    return unpack2x16float(k_cache[i >> 1u])[i & 1u];
}

fn v_at(i: u32) -> f32 {
    return unpack2x16float(v_cache[i >> 1u])[i & 1u];
}
