//! The library's one error type. Every variant carries enough context (a path, a tensor name, a
//! variant) for a user to act on the message without a backtrace.

use std::path::PathBuf;

use crate::metrics::ShapeError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("unknown model variant `{0}` (expected unet, light or lighter@C with C in 1,2,4,...,128)")]
    UnknownVariant(String),

    #[error("weights do not fit {variant}: tensor `{name}`: {problem}")]
    Weights { variant: String, name: String, problem: String },

    /// A weights file named by `--weights` or `LIGHTUNET_WEIGHTS` (`origin`) that is not there.
    #[error("weights {} (from {origin}) do not exist", path.display())]
    MissingWeights { path: PathBuf, origin: String },

    #[error("cannot read checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("bad input: {0}")]
    Input(String),

    /// A tensor of a dtype safetensors (or this writer) does not take.
    #[error("cannot write {0:?} tensors to safetensors")]
    UnsupportedDType(candle_core::DType),

    /// A file that could not be written for a reason other than I/O (an invalid name, a
    /// duplicate tensor, a serialisation failure).
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },

    /// Weights whose names and shapes fit no member of the family (`model::detect_variant`).
    #[error("cannot tell the model variant: {0}")]
    UnknownLayout(String),

    /// A dtype the CPU kernels do not implement (they run in f32).
    #[error("CPU inference runs in f32, got {0:?}")]
    CpuDType(candle_core::DType),

    /// Backpropagation gave no gradient for a tensor that should have one.
    #[error("no gradient for {0}")]
    NoGradient(String),

    /// A `--device` name that is none of `cpu`, `cuda`, `cuda:N`, `auto`.
    #[error("unknown device `{0}` (cpu, cuda, cuda:N, auto)")]
    UnknownDevice(String),

    /// A valid device name this build or machine cannot provide (no `cuda` feature, no driver,
    /// no such GPU).
    #[error("cannot use {device}: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    #[error("unknown dtype `{0}` (f32, f16, bf16)")]
    UnknownDtype(String),

    /// A setting no run could use (a training recipe value, a network input size), found before
    /// any work starts.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),

    /// A training data set that cannot be used as it is (missing folders, unpaired or unreadable
    /// files, masks of the wrong size); the message lists every problem found.
    #[error("{0}")]
    Dataset(String),

    /// Buffers or images whose sizes disagree.
    #[error(transparent)]
    Shape(#[from] ShapeError),

    /// A tensor read back (e.g. optimizer state from a checkpoint) whose shape is not the one
    /// it must fill.
    #[error("{what}: shape {got:?}, expected {expected:?}")]
    TensorShape { what: String, expected: Vec<usize>, got: Vec<usize> },

    /// Training diverged: the loss is NaN or infinite.
    #[error("the loss became {value} at step {step}: lower the learning rate or check the data")]
    NonFiniteLoss { value: f64, step: u64 },

    /// Training diverged: a gradient holds NaN or an infinity (the step was not applied).
    #[error("the gradient of {name} became NaN or infinite at step {step}: lower the learning rate or check the data")]
    NonFiniteGradient { name: String, step: u64 },

    /// Validation gave a NaN or infinite loss (the weights or their running statistics diverged).
    #[error("the validation loss became {value} after epoch {epoch}: lower the learning rate or check the data")]
    NonFiniteValidation { value: f64, epoch: usize },

    /// A tensor about to be written holds NaN or an infinity: not written (a file already
    /// there is kept).
    #[error("{name} holds NaN or infinite values: not written")]
    NonFiniteTensor { name: String },

    /// An image (PNG) that could not be encoded for `path`.
    #[error("encoding {}: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },

    /// A run's JSON (config, log, checkpoint state) that could not be written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// Tensors that could not be serialised as safetensors (`what` says which).
    #[error("{what}: {source}")]
    Safetensors { what: String, source: safetensors::SafeTensorError },

    /// A lock whose holder panicked (the named shared state may be half-updated).
    #[error("the {0} lock is poisoned: a thread panicked while holding it")]
    Poisoned(&'static str),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
