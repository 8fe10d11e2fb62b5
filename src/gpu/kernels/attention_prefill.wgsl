// Causal grouped-query attention for prefill, tiled: workgroup (head, split, row tile)
// computes 16 rows of one head over the keys [split * keys_per_split, ...) and reads
// each tile of 32 keys and values into workgroup memory once for all 16 rows (the
// per-row kernel, attention.wgsl, reads them once per row). Rows are main-sequence
// rows: row r's keys are slots 0..n_prefix (causal through n_prefix). Writes the same
// (max, sum, acc[head_dim]) partials as attention.wgsl, combined by
// attention_merge.wgsl. head_dim <= 64. Prepended: common.wgsl, then the cache's
// kv_*.wgsl and attention_io.wgsl (the bindings).

const WG: u32 = 256u;
const ROWS: u32 = 16u;   // rows per workgroup
const KEYS: u32 = 32u;   // keys per tile
const HD: u32 = 64u;     // largest head_dim (stride of the tiles)
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_tile: array<f32, 1024>;   // (ROWS, HD), pre-scaled
var<workgroup> kv_tile: array<f32, 2048>;  // (KEYS, HD) keys, then values
var<workgroup> p_tile: array<f32, 512>;    // (ROWS, KEYS) scores, then probabilities
var<workgroup> row_m: array<f32, 16>;
var<workgroup> row_l: array<f32, 16>;
var<workgroup> row_corr: array<f32, 16>;
var<workgroup> row_keys: array<u32, 16>;   // keys of each row (0 past the pass's rows)
var<workgroup> most_keys: u32;

// Loads (KEYS, head_dim) of `cache` from slot `first` into kv_tile (zeros past `end`).
fn load_tile(t: u32, first: u32, end: u32, kv_off: u32, from_values: bool) {
    let hd = attn.head_dim;
    for (var i = t; i < KEYS * HD; i += WG) {
        let j = i / HD;
        let d = i % HD;
        var v = 0.0;
        if (first + j < end && d < hd) {
            let at = (first + j) * attn.kv_dim + kv_off + d;
            if (from_values) {
                v = v_at(at);
            } else {
                v = k_at(at);
            }
        }
        kv_tile[i] = v;
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let split = wg.y;
    let r0 = wg.z * ROWS;
    let hd = attn.head_dim;
    let kv_off = (h / (attn.n_heads / attn.n_kv_heads)) * hd;

    // Queries of the tile's rows, and each row's key count.
    for (var i = t; i < ROWS * HD; i += WG) {
        let r = r0 + i / HD;
        let d = i % HD;
        var v = 0.0;
        if (r < count.n && d < hd) {
            v = q[r * attn.n_heads * hd + h * hd + d] * attn.scale;
        }
        q_tile[i] = v;
    }
    if (t < ROWS) {
        row_m[t] = NEG_BIG;
        row_l[t] = 0.0;
        var keys = 0u;
        if (r0 + t < count.n) {
            keys = rows[r0 + t].n_prefix;
        }
        row_keys[t] = keys;
    }
    workgroupBarrier();

    if (t == 0u) {
        var most = 0u;
        for (var r = 0u; r < ROWS; r++) {
            most = max(most, row_keys[r]);
        }
        most_keys = most;
    }
    let most = workgroupUniformLoad(&most_keys);
    let start = min(split * count.keys_per_split, most);
    let end = min(start + count.keys_per_split, most);

    // Thread t accumulates row t / 16, dims (t % 16) * 4 .. + 4.
    let my_row = t / 16u;
    let my_dim = (t % 16u) * 4u;
    var acc = vec4<f32>(0.0);
    for (var first = start; first < end; first += KEYS) {
        // 1. Scores of every (row, key) of the tile, two per thread.
        load_tile(t, first, end, kv_off, false);
        workgroupBarrier();
        for (var c = 0u; c < 2u; c++) {
            let i = t + c * WG;
            let r = i / KEYS;
            let j = i % KEYS;
            var s = NEG_BIG;
            if (first + j < min(end, row_keys[r])) {
                s = 0.0;
                for (var d = 0u; d < hd; d++) {
                    s += q_tile[r * HD + d] * kv_tile[j * HD + d];
                }
            }
            p_tile[i] = s;
        }
        workgroupBarrier();

        // 2. Online softmax, one thread per row; masked keys weigh 0.
        if (t < ROWS) {
            var m_new = row_m[t];
            for (var j = 0u; j < KEYS; j++) {
                m_new = max(m_new, p_tile[t * KEYS + j]);
            }
            var sum = 0.0;
            let valid = min(end, row_keys[t]);
            for (var j = 0u; j < KEYS; j++) {
                var p = 0.0;
                if (first + j < valid) {
                    p = exp(p_tile[t * KEYS + j] - m_new);
                }
                p_tile[t * KEYS + j] = p;
                sum += p;
            }
            let corr = exp(row_m[t] - m_new);
            row_corr[t] = corr;
            row_l[t] = row_l[t] * corr + sum;
            row_m[t] = m_new;
        }
        load_tile(t, first, end, kv_off, true);
        workgroupBarrier();

        // 3. Weighted values.
        acc *= row_corr[my_row];
        for (var j = 0u; j < KEYS; j++) {
            let p = p_tile[my_row * KEYS + j];
            let vb = j * HD + my_dim;
            acc += p * vec4<f32>(kv_tile[vb], kv_tile[vb + 1u], kv_tile[vb + 2u], kv_tile[vb + 3u]);
        }
        workgroupBarrier();
    }

    let r = r0 + my_row;
    if (r >= count.n) {
        return;
    }
    let base = ((r * attn.n_heads + h) * count.n_splits + split) * (hd + 2u);
    if (t % 16u == 0u) {
        partials[base] = row_m[my_row];
        partials[base + 1u] = row_l[my_row];
    }
    for (var c = 0u; c < 4u; c++) {
        let d = my_dim + c;
        if (d < hd) {
            partials[base + 2u + d] = acc[c];
        }
    }
}
