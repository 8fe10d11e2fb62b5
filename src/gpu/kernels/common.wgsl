// Declarations shared by the kernels (prepended to each by kernels.rs).

// One row (token) of a forward pass. Its keys are cache slots 0..n_prefix (the shared
// prompt) followed by suffix_start..suffix_start+n_suffix (its own stream).
struct Row {
    token: u32,
    pos: u32,           // position in its sequence
    slot: u32,          // cache slot its key and value are written to
    n_prefix: u32,
    suffix_start: u32,
    n_suffix: u32,
    lora: u32,          // 1: the LoRA adapter of the pass applies to this row
    _pad1: u32,
}

// Per-step counts; a second copy at a 256-byte offset describes the output-head rows.
struct Count {
    n: u32,              // rows
    first_row: u32,      // first row of X read (the output head reads only the last)
    keys_per_split: u32, // attention: keys one workgroup reads
    n_splits: u32,       // attention: workgroups per (row, head)
}

// Width of the rows of an elementwise op (add, swiglu) or of the logits (argmax).
struct Width {
    width: u32,
}

// Shapes of attention.wgsl and attention_merge.wgsl.
struct Attn {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    kv_dim: u32,
    scale: f32,   // 1 / sqrt(head_dim)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Byte k (0..4, lowest first) of a word of four i8 values, as f32.
fn i8_lane(word: u32, k: u32) -> f32 {
    return f32(extractBits(bitcast<i32>(word), 8u * k, 8u));
}
