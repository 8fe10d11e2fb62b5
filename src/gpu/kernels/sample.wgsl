// ids[r] = the token row r's sampling settings pick from its logits, one workgroup per
// row, so a decode step reads back one u32 per row instead of the vocabulary's logits.
// Greedy (temperature 0 or top_k <= 1): the argmax, lowest index on ties. Otherwise the
// same rule as the CPU's sampler::pick: the top_k logits in order (value descending,
// index ascending), softmax at the temperature, cut to the smallest prefix whose
// probability reaches top_p, and the host's uniform draw u walks the kept mass.
// ids[MAX_ROWS + r] = the picked token's log-probability under the row's raw logits
// (log-softmax at temperature 1), as f32 bits: what the vote weighs answers by.
// Prepended: common.wgsl.

struct SampleParams {
    temperature: f32,
    top_k: u32,      // 2..=MAX_K when sampling
    top_p: f32,
    u: f32,          // uniform in [0, 1), drawn by the host's seeded generator
}

@group(0) @binding(0) var<uniform> dims: Width;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> logits: array<f32>;          // (n, vocab)
@group(0) @binding(3) var<storage, read> params: array<SampleParams>; // (n)
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;       // (2, MAX_ROWS)

const WG: u32 = 256u;
const MAX_K: u32 = 64u; // sampler::DEVICE_TOP_K
const NONE: u32 = 0xFFFFFFFFu;
const MAX_ROWS: u32 = 64u; // session::MAX_ROWS

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;
var<workgroup> cand_v: array<f32, 64>;
var<workgroup> cand_i: array<u32, 64>;

// Whether (v, i) comes before (bv, bi) in the order (value descending, index ascending).
fn before(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

// The first (value, index) of the row at `base` after (after_v, after_i) in that order
// (the very first when `first`), reduced over the workgroup into best_v[0], best_i[0].
fn next_in_order(t: u32, base: u32, first: bool, after_v: f32, after_i: u32) {
    var bv = -3.4e38;
    var bi = NONE;
    for (var i = t; i < dims.width; i += WG) {
        let v = logits[base + i];
        let after = first || v < after_v || (v == after_v && i > after_i);
        if (after && before(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    best_v[t] = bv;
    best_i[t] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s && before(best_v[t + s], best_i[t + s], best_v[t], best_i[t])) {
            best_v[t] = best_v[t + s];
            best_i[t] = best_i[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let r = wg.x;
    if (r >= count.n) {
        return;
    }
    let base = r * dims.width;
    let p = params[r];
    let greedy = p.temperature == 0.0 || p.top_k <= 1u;
    let k = select(min(min(p.top_k, MAX_K), dims.width), 1u, greedy);

    // The k best, in order: round j finds the first after round j-1's.
    var after_v = 0.0;
    var after_i = 0u;
    for (var j = 0u; j < k; j++) {
        next_in_order(t, base, j == 0u, after_v, after_i);
        after_v = best_v[0];
        after_i = best_i[0];
        if (t == 0u) {
            cand_v[j] = after_v;
            cand_i[j] = min(after_i, dims.width - 1u);
        }
        workgroupBarrier();
    }
    // log(sum(exp(logits))) of the row, from its largest logit (cand_v[0]).
    let top = cand_v[0];
    var se = 0.0;
    for (var i = t; i < dims.width; i += WG) {
        se += exp(logits[base + i] - top);
    }
    best_v[t] = se;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            best_v[t] += best_v[t + s];
        }
        workgroupBarrier();
    }
    if (t != 0u) {
        return;
    }
    let log_norm = top + log(best_v[0]);
    if (greedy) {
        ids[r] = cand_i[0];
        ids[MAX_ROWS + r] = bitcast<u32>(logits[base + cand_i[0]] - log_norm);
        return;
    }

    // Softmax over the k, the top-p cut and the walk: serial, in the CPU's order of
    // f32 operations.
    var probs: array<f32, 64>;
    var total = 0.0;
    for (var j = 0u; j < k; j++) {
        probs[j] = exp((cand_v[j] - cand_v[0]) / p.temperature);
        total += probs[j];
    }
    var cum = 0.0;
    var keep = k;
    for (var j = 0u; j < k; j++) {
        probs[j] /= total;
        cum += probs[j];
        if (cum >= p.top_p && keep == k) {
            keep = j + 1u;
        }
    }
    var mass = 0.0;
    for (var j = 0u; j < keep; j++) {
        mass += probs[j];
    }
    var rest = p.u * mass;
    var pick = cand_i[keep - 1u];
    for (var j = 0u; j < keep; j++) {
        if (rest < probs[j]) {
            pick = cand_i[j];
            break;
        }
        rest -= probs[j];
    }
    ids[r] = pick;
    ids[MAX_ROWS + r] = bitcast<u32>(logits[base + pick] - log_norm);
}
