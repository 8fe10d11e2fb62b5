// KV cache words: INT8 with one f32 scale per (position, KV head), the method's KV8. A
// slot's row is KV_DIM / 4 words of four i8 values (pack4x8snorm of value / scale, so
// value = unpack4x8snorm * scale with scale = the head's largest |value|), then one
// scale word (f32 bits) per KV head. Readers index values as if the row were KV_DIM
// plain values (slot * KV_DIM + j).

alias KvWord = u32;

override KV_DIM: u32;
override HEAD_DIM: u32;

fn kv_stride() -> u32 {
    return KV_DIM / 4u + KV_DIM / HEAD_DIM;
}

fn kv8_at(w: u32, scale: u32, i: u32) -> f32 {
    return unpack4x8snorm(w)[i & 3u] * bitcast<f32>(scale);
}

fn k_at(i: u32) -> f32 {
    let slot = i / KV_DIM;
    let j = i - slot * KV_DIM;
    let base = slot * kv_stride();
    return kv8_at(k_cache[base + j / 4u], k_cache[base + KV_DIM / 4u + j / HEAD_DIM], j);
}

fn v_at(i: u32) -> f32 {
    let slot = i / KV_DIM;
    let j = i - slot * KV_DIM;
    let base = slot * kv_stride();
    return kv8_at(v_cache[base + j / 4u], v_cache[base + KV_DIM / 4u + j / HEAD_DIM], j);
}
