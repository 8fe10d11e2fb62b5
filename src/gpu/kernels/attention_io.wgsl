// The bindings of attention.wgsl and attention_prefill.wgsl (prepended to both): the
// queries, one layer's cache, and the split partials they write for attention_merge.wgsl.

@group(0) @binding(0) var<uniform> attn: Attn;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> q: array<f32>;                 // (n, n_heads * head_dim)
@group(0) @binding(4) var<storage, read> k_cache: array<KvWord>;        // (slots, kv_dim)
@group(0) @binding(5) var<storage, read> v_cache: array<KvWord>;        // (slots, kv_dim)
@group(0) @binding(6) var<storage, read_write> partials: array<f32>;    // (n, n_heads, n_splits, head_dim + 2)
