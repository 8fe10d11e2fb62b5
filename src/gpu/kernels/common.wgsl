// Shared by every kernel that needs the rows of a step (prepended by kernels.rs).

// One row (token) of a forward pass. Its keys are cache slots 0..n_prefix (the shared
// prompt) followed by suffix_start..suffix_start+n_suffix (its own stream).
struct Row {
    token: u32,
    pos: u32,           // position in its sequence
    slot: u32,          // cache slot its key and value are written to
    n_prefix: u32,
    suffix_start: u32,
    n_suffix: u32,
    _pad0: u32,
    _pad1: u32,
}

// Per-step counts; a second copy at a 256-byte offset describes the output-head rows.
struct Count {
    n: u32,              // rows
    first_row: u32,      // first row of X read (the output head reads only the last)
    keys_per_split: u32, // attention: keys one workgroup reads
    n_splits: u32,       // attention: workgroups per (row, head)
}
