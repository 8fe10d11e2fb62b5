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

    #[error("LoRA adapter: {0}")]
    Adapter(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("aborted: {0}")]
    Aborted(String),

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
    /// A stable, machine-readable name for the kind of error, for callers that branch
    /// on it (the browser API sets it as `error.code`). The message says the details.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Truncated { .. } | Error::Corrupt(_) => "CORRUPT_MODEL",
            Error::BadMagic { .. }
            | Error::UnsupportedVersion(_)
            | Error::UnknownTensorType { .. }
            | Error::MissingTensor { .. }
            | Error::TensorShape { .. }
            | Error::UnsupportedArchitecture(_)
            | Error::UnsupportedConfig(_)
            | Error::MissingMetadata(_)
            | Error::MetadataType { .. }
            | Error::Tokenizer(_)
            | Error::ChatTemplate(_) => "UNSUPPORTED_MODEL",
            Error::ContextOverflow { .. } => "CONTEXT_OVERFLOW",
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::Aborted(_) => "ABORTED",
            Error::Adapter(_) => "INVALID_ADAPTER",
            Error::Io { .. } => "STORAGE",
            Error::NoGpu(_) => "NO_WEBGPU",
            Error::GpuMemory { .. } => "GPU_MEMORY",
            Error::Gpu(_) => "GPU",
            Error::Candle(_) => "INTERNAL",
        }
    }

    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_name_what_the_caller_can_do_something_about() {
        let truncated = Error::Truncated {
            what: "x".into(),
            start: 0,
            end: 8,
            available: 4,
        };
        assert_eq!(truncated.code(), "CORRUPT_MODEL");
        assert_eq!(
            Error::BadMagic {
                found: *b"PK\x03\x04"
            }
            .code(),
            "UNSUPPORTED_MODEL"
        );
        assert_eq!(Error::NoGpu("none".into()).code(), "NO_WEBGPU");
        let overflow = Error::ContextOverflow {
            tokens: 9000,
            capacity: 8192,
        };
        assert_eq!(overflow.code(), "CONTEXT_OVERFLOW");
        let io = Error::io("reading", std::io::Error::other("gone"));
        assert_eq!(io.code(), "STORAGE");
    }
}
