// X[r] = table[token of row r], dequantized. One workgroup per row; a table split
// into parts runs once per part and writes only the rows whose token it holds.
// Prepended: common.wgsl, quant.wgsl (bindings 0-1).

@group(0) @binding(2) var<uniform> dims: Dims;
@group(0) @binding(3) var<uniform> count: Count;
@group(0) @binding(4) var<storage, read> rows: array<Row>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;   // (n, d / 4)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    if (r >= count.n) {
        return;
    }
    let token = rows[r].token;
    if (token < dims.y_offset || token >= dims.y_offset + dims.n_out) {
        return;
    }
    let local_row = token - dims.y_offset;
    for (var u = tid; u < dims.k_units; u += 64u) {
        let w = unit_weights(local_row * dims.k_units + u);
        let o = (r * dims.k_units + u) * 8u;
        for (var i = 0u; i < 8u; i++) {
            out[o + i] = w[i];
        }
    }
}
