// Weight storage read by matvec.wgsl and embed.wgsl (prepended by kernels.rs).
//
// A matrix (rows, cols) is a row-major sequence of units of 32 consecutive weights of
// one row. Repacked at upload (gpu/weights.rs) into 4-byte words:
//   F32:  quants 32 words per unit (f32 bits); no scales.
//   F16:  quants 16 words per unit (two halves each); no scales.
//   Q8_0: quants 8 words per unit (four i8 each); scales 1 word: pack2x16float(d, 0).
//   Q4:   (Q4_0, Q4_1) quants 4 words per unit, byte i holds weight i in its low
//         nibble and weight i + 16 in its high nibble; scales 1 word
//         pack2x16float(d, m): w = d * q + m (Q4_0: m = -8 d).
//   Q4_K: quants as Q4; scales 4 words per super-block of 8 units: pack2x16float(d,
//         dmin), then ggml's 12 bytes of 6-bit scales and mins.
//   Q5:   (Q5_0, Q5_1) quants 5 words per unit: the 4 nibble words of Q4, then a word
//         whose bit i is weight i's fifth bit; scales as Q4 (Q5_0: m = -16 d).
//   Q5_K: quants as Q5; scales as Q4_K.
//   Q6_K: quants 6 words per unit: the 4 nibble words of Q4, then two words holding
//         the top two bits of weights 0-15 and 16-31, weight i at bits 2 (i % 16);
//         scales 1 word per unit: the super-block's d (f16 bits) in the low half, the
//         int8 scales of weights 0-15 and 16-31 in bytes 2 and 3: w = d * sc * (q - 32).
const FMT_F32: u32 = 0u;
const FMT_F16: u32 = 1u;
const FMT_Q8_0: u32 = 2u;
const FMT_Q4: u32 = 3u;
const FMT_Q4_K: u32 = 4u;
const FMT_Q5: u32 = 5u;
const FMT_Q5_K: u32 = 6u;
const FMT_Q6_K: u32 = 7u;

override FORMAT: u32 = 3u;

// Where one part of a matrix (rows y_offset..y_offset + n_out) sits, as matvec.wgsl
// (outputs) and embed.wgsl (table rows) read it. Filled by gpu/backend.rs.
struct Dims {
    n_out: u32,     // rows of this part
    k_units: u32,   // units of 32 per row (cols / 32)
    y_offset: u32,  // first row of the whole matrix this part holds
    y_stride: u32,  // matvec: width of a y row
    has_bias: u32,  // matvec: add bias[y_offset + row]
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> quants: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;

// Byte k of the 12 Q4_K scale bytes of super-block sb.
fn q4k_scale_byte(sb: u32, k: u32) -> u32 {
    return (scales[sb * 4u + 1u + k / 4u] >> (8u * (k % 4u))) & 0xFFu;
}

// Whether codes have a fifth (and sixth) bit in words after the nibbles, and how many
// words a unit's codes take.
fn has_high_bits() -> bool {
    return FORMAT == FMT_Q5 || FORMAT == FMT_Q5_K || FORMAT == FMT_Q6_K;
}
fn code_words() -> u32 {
    if (FORMAT == FMT_Q6_K) {
        return 6u;
    }
    if (FORMAT == FMT_Q5 || FORMAT == FMT_Q5_K) {
        return 5u;
    }
    return 4u;
}

// (scale, offset) of a 4- or 5-bit unit: w = scale * q + offset.
fn q4_affine(unit: u32) -> vec2<f32> {
    if (FORMAT == FMT_Q4_K || FORMAT == FMT_Q5_K) {
        let sb = unit / 8u;
        let j = unit % 8u;
        let dd = unpack2x16float(scales[sb * 4u]);
        var sc: u32;
        var mn: u32;
        if (j < 4u) {
            sc = q4k_scale_byte(sb, j) & 63u;
            mn = q4k_scale_byte(sb, j + 4u) & 63u;
        } else {
            sc = (q4k_scale_byte(sb, j + 4u) & 0xFu) | ((q4k_scale_byte(sb, j - 4u) >> 6u) << 4u);
            mn = (q4k_scale_byte(sb, j + 4u) >> 4u) | ((q4k_scale_byte(sb, j) >> 6u) << 4u);
        }
        return vec2<f32>(dd.x * f32(sc), -(dd.y * f32(mn)));
    }
    return unpack2x16float(scales[unit]);
}

// Sign-extends byte b of w.
fn i8_at(w: u32, b: u32) -> f32 {
    return f32(bitcast<i32>(w << (24u - 8u * b)) >> 24u);
}

// The 32 weights of `unit`, dequantized: (8 x vec4).
fn unit_weights(unit: u32) -> array<vec4<f32>, 8> {
    var w: array<vec4<f32>, 8>;
    if (FORMAT == FMT_F32) {
        let base = unit * 32u;
        for (var i = 0u; i < 8u; i++) {
            let b = base + i * 4u;
            w[i] = vec4<f32>(bitcast<f32>(quants[b]), bitcast<f32>(quants[b + 1u]),
                             bitcast<f32>(quants[b + 2u]), bitcast<f32>(quants[b + 3u]));
        }
    } else if (FORMAT == FMT_F16) {
        let base = unit * 16u;
        for (var i = 0u; i < 8u; i++) {
            let lo = unpack2x16float(quants[base + i * 2u]);
            let hi = unpack2x16float(quants[base + i * 2u + 1u]);
            w[i] = vec4<f32>(lo, hi);
        }
    } else if (FORMAT == FMT_Q8_0) {
        let d = unpack2x16float(scales[unit]).x;
        let base = unit * 8u;
        for (var i = 0u; i < 8u; i++) {
            let q = quants[base + i];
            w[i] = vec4<f32>(i8_at(q, 0u), i8_at(q, 1u), i8_at(q, 2u), i8_at(q, 3u)) * d;
        }
    } else if (has_high_bits()) {
        let p = load_packed(unit);
        let words = array<u32, 4>(p.lo.x, p.lo.y, p.lo.z, p.lo.w);
        for (var i = 0u; i < 4u; i++) {
            w[i] = (nibbles(words[i], 0u) + high_bits(p, 0u, i)) * p.affine.x + p.affine.y;
            w[i + 4u] = (nibbles(words[i], 4u) + high_bits(p, 1u, i)) * p.affine_hi.x + p.affine_hi.y;
        }
    } else {
        let a = q4_affine(unit);
        let base = unit * 4u;
        for (var i = 0u; i < 4u; i++) {
            let q = quants[base + i];
            let lo = vec4<f32>(f32(q & 0xFu), f32((q >> 8u) & 0xFu),
                               f32((q >> 16u) & 0xFu), f32((q >> 24u) & 0xFu));
            let hi = vec4<f32>(f32((q >> 4u) & 0xFu), f32((q >> 12u) & 0xFu),
                               f32((q >> 20u) & 0xFu), f32((q >> 28u) & 0xFu));
            w[i] = lo * a.x + a.y;
            w[i + 4u] = hi * a.x + a.y;
        }
    }
    return w;
}

// The quantized formats (Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0) held in
// registers: a unit's words and its affine, so a matvec reads and decodes them once and
// dots them with M rows.
struct Packed {
    lo: vec4<u32>,         // Q4, Q5, Q6_K: the 4 nibble words; Q8_0: words 0-3
    hi: vec4<u32>,         // Q8_0: words 4-7; Q5: x = fifth bits; Q6_K: x, y = top bits
    affine: vec2<f32>,     // weights 0-15 (all for a single scale): w = affine.x * q + affine.y
    affine_hi: vec2<f32>,  // Q5, Q6_K: weights 16-31
}

fn is_packed_format() -> bool {
    return FORMAT == FMT_Q4 || FORMAT == FMT_Q4_K || FORMAT == FMT_Q8_0 || has_high_bits();
}

fn load_packed(unit: u32) -> Packed {
    var p: Packed;
    if (FORMAT == FMT_Q8_0) {
        let b = unit * 8u;
        p.lo = vec4<u32>(quants[b], quants[b + 1u], quants[b + 2u], quants[b + 3u]);
        p.hi = vec4<u32>(quants[b + 4u], quants[b + 5u], quants[b + 6u], quants[b + 7u]);
        p.affine = vec2<f32>(unpack2x16float(scales[unit]).x, 0.0);
    } else {
        let b = unit * code_words();
        p.lo = vec4<u32>(quants[b], quants[b + 1u], quants[b + 2u], quants[b + 3u]);
        if (FORMAT == FMT_Q6_K) {
            p.hi = vec4<u32>(quants[b + 4u], quants[b + 5u], 0u, 0u);
            let s = scales[unit];
            let d = unpack2x16float(s).x;
            let sc = d * vec2<f32>(vec2<i32>(bitcast<i32>(s << 8u), bitcast<i32>(s)) >> vec2<u32>(24u));
            p.affine = vec2<f32>(sc.x, -32.0 * sc.x);
            p.affine_hi = vec2<f32>(sc.y, -32.0 * sc.y);
        } else {
            if (has_high_bits()) {
                p.hi = vec4<u32>(quants[b + 4u], 0u, 0u, 0u);
            }
            p.affine = q4_affine(unit);
            p.affine_hi = p.affine;
        }
    }
    return p;
}

// The high part (16 times the fifth bit, or 16 times the top two bits) of the codes
// of weights 4j..4j+3 (half 0) or 16+4j..16+4j+3 (half 1) of a Q5, Q5_K or Q6_K unit.
fn high_bits(p: Packed, half: u32, j: u32) -> vec4<f32> {
    if (FORMAT == FMT_Q6_K) {
        let w = select(p.hi.x, p.hi.y, half == 1u);
        let s = 8u * j;
        return vec4<f32>((vec4<u32>(w) >> vec4<u32>(s, s + 2u, s + 4u, s + 6u)) & vec4<u32>(3u)) * 16.0;
    }
    let s = 16u * half + 4u * j;
    return vec4<f32>((vec4<u32>(p.hi.x) >> vec4<u32>(s, s + 1u, s + 2u, s + 3u)) & vec4<u32>(1u)) * 16.0;
}

// Four signed bytes of w.
fn i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u),
                               bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u));
}

// Nibbles 0, 2, 4, 6 (low) or 1, 3, 5, 7 (high) of w.
fn nibbles(w: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u))
                     & vec4<u32>(0xFu));
}
