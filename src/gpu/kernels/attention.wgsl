// Grouped-query attention, split over the keys (flash-decoding): workgroup
// (head, row, split) reads keys [split * keys_per_split, ...) of its row with an online
// softmax and writes (max, sum, acc[head_dim]) to `partials`; attention_merge.wgsl
// combines the splits. Serves decode (few rows, many splits), parallel streams, and
// prefill where attention_prefill.wgsl does not apply (causal through each row's key
// count). Prepended: common.wgsl, then the cache's
// kv_*.wgsl and attention_io.wgsl (the bindings).

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_head: array<f32, 256>;
var<workgroup> probs: array<f32, 64>;
var<workgroup> slots: array<u32, 64>;
var<workgroup> red: array<f32, 64>;

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let out = red[0];
    workgroupBarrier();
    return out;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let out = red[0];
    workgroupBarrier();
    return out;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let r = wg.y;
    let split = wg.z;
    let row = rows[r];
    let hd = attn.head_dim;
    let kv_off = (h / (attn.n_heads / attn.n_kv_heads)) * hd;
    let n_keys = row.n_prefix + row.n_suffix;
    let start = min(split * count.keys_per_split, n_keys);
    let end = min(start + count.keys_per_split, n_keys);

    for (var d = t; d < hd; d += WG) {
        q_head[d] = q[r * attn.n_heads * hd + h * hd + d];
    }
    workgroupBarrier();

    var m = NEG_BIG;
    var l = 0.0;
    var acc: array<f32, 4>;   // dims t, t + 64, t + 128, t + 192
    for (var tile = start; tile < end; tile += WG) {
        // 1. Scores of this tile's keys, one per thread.
        let j = tile + t;
        var s = NEG_BIG;
        if (j < end) {
            var slot = j;
            if (j >= row.n_prefix) {
                slot = row.suffix_start + (j - row.n_prefix);
            }
            slots[t] = slot;
            let kb = slot * attn.kv_dim + kv_off;
            var dot_qk = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot_qk += q_head[d] * k_at(kb + d);
            }
            s = dot_qk * attn.scale;
        }
        // 2. Online softmax update.
        let m_new = max(m, reduce_max(t, s));
        let corr = exp(m - m_new);
        var p = 0.0;
        if (j < end) {
            p = exp(s - m_new);
        }
        probs[t] = p;
        l = l * corr + reduce_sum(t, p);
        m = m_new;
        // 3. Weighted values: each thread owns dims t, t + 64, ...
        let n_tile = min(WG, end - tile);
        for (var c = 0u; c < 4u; c++) {
            let d = t + c * WG;
            if (d < hd) {
                var a = acc[c] * corr;
                for (var i = 0u; i < n_tile; i++) {
                    a += probs[i] * v_at(slots[i] * attn.kv_dim + kv_off + d);
                }
                acc[c] = a;
            }
        }
        workgroupBarrier();
    }

    let base = ((r * attn.n_heads + h) * count.n_splits + split) * (hd + 2u);
    if (t == 0u) {
        partials[base] = m;
        partials[base + 1u] = l;
    }
    for (var c = 0u; c < 4u; c++) {
        let d = t + c * WG;
        if (d < hd) {
            partials[base + 2u + d] = acc[c];
        }
    }
}
