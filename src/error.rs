//! The library's one error type. Every variant carries enough context (a path, a tensor name, a
//! variant) for a user to act on the message without a backtrace.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("unknown model variant `{0}` (expected unet, light or lighter@C with C in 1,2,4,...,128)")]
    UnknownVariant(String),

    #[error("weights do not fit {variant}: tensor `{name}`: {problem}")]
    Weights { variant: String, name: String, problem: String },

    #[error("cannot read checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("bad input: {0}")]
    Input(String),

    #[error("{0}")]
    Msg(String),

    /// Weights whose names and shapes fit no member of the family (`model::detect_variant`).
    #[error("cannot tell the model variant: {0}")]
    UnknownLayout(String),

    /// A dtype the CPU kernels do not implement (they run in f32).
    #[error("CPU inference runs in f32, got {0:?}")]
    CpuDType(candle_core::DType),

    /// A tensor of another shape than the one it is compared with or stands in for.
    #[error("{what}: shape {got:?}, expected {expected:?}")]
    Shape { what: String, got: Vec<usize>, expected: Vec<usize> },

    /// Backpropagation gave no gradient for a tensor that should have one.
    #[error("no gradient for {0}")]
    NoGradient(String),

    /// A lock whose holder panicked (the state behind it may be half-updated).
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
