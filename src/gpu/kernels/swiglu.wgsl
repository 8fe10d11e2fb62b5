// gate = silu(gate) * up, elementwise over (n, width). Prepended: common.wgsl.

@group(0) @binding(0) var<uniform> dims: Width;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= count.n * dims.width) {
        return;
    }
    let g = gate[i];
    gate[i] = g / (1.0 + exp(-g)) * up[i];
}
