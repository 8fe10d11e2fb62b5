//! One error type for the whole crate. Every message says what went wrong and,
//! where the user can do something about it, what to do.

use thiserror::Error;

/// Everything that can go wrong in edge-reason.
#[derive(Debug, Error)]
pub enum Error {
    #[error("not a GGUF file: the first bytes are {found:?}, expected \"GGUF\"; check that the path or URL points at a .gguf model")]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {0}: edge-reason reads versions 2 and 3; re-export the model with a current llama.cpp")]
    UnsupportedVersion(u32),

    #[error("the GGUF file is truncated: {what} needs bytes {start}..{end} but only {available} are there; the file is incomplete, download it again")]
    Truncated {
        what: String,
        start: u64,
        end: u64,
        available: u64,
    },

    #[error("corrupt GGUF: {0}; the file is damaged, download it again")]
    Corrupt(String),

    #[error("tensor `{name}` has unknown tensor type id {type_id}; edge-reason supports F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K")]
    UnknownTensorType { name: String, type_id: u32 },

    #[error("the model has no tensor `{name}`, which a `{arch}` model needs; the file is incomplete or not a {arch} model")]
    MissingTensor { name: String, arch: String },

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("unsupported architecture `{0}`: edge-reason runs `llama` (SmolLM2, Llama 3) and `qwen2` (Qwen2.5) models")]
    UnsupportedArchitecture(String),

    #[error("unsupported model configuration: {0}")]
    UnsupportedConfig(String),

    #[error("the model metadata has no key `{0}`")]
    MissingMetadata(String),

    #[error("metadata key `{key}` is {found}, expected {expected}")]
    MetadataType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("the input is {tokens} tokens but the context holds {capacity}; shorten the prompt, lower max tokens, or raise the context size")]
    ContextOverflow { tokens: usize, capacity: usize },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("no GPU: {0}; run with the CPU backend (`--backend cpu`), or enable WebGPU / install a Vulkan driver")]
    NoGpu(String),

    #[error("the model needs {need} bytes of GPU memory for {what} but the device allows {limit}; use a smaller model or the CPU backend")]
    GpuMemory { what: String, need: u64, limit: u64 },

    #[error("GPU: {0}")]
    Gpu(String),

    #[error("tensor math: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
