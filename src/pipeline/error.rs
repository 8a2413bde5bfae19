//! The pipeline's error type: every variant says which side (input, output, model, a thread) failed
//! and carries GStreamer's own message where there is one.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),

    #[error("invalid pipeline description `{description}`: {message}")]
    Parse { description: String, message: String },

    #[error("GStreamer element `{0}` is missing (install the GStreamer plugin packages, see scripts/setup.sh)")]
    MissingElement(String),

    #[error("{0}")]
    Config(String),

    #[error("input file {} does not exist", .0.display())]
    MissingInput(PathBuf),

    #[error("output {} already exists (pass --overwrite to replace it)", .0.display())]
    OutputExists(PathBuf),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// An error message posted on a pipeline's bus.
    #[error("{side} pipeline: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream { side: &'static str, message: String, debug: Option<String> },

    #[error("{side} pipeline: {message}")]
    Gst { side: &'static str, message: String },

    #[error("frame {seq}: {message}")]
    Frame { seq: u64, message: String },

    #[error("model: {0}")]
    Model(#[from] crate::Error),

    #[error("the {0} thread panicked")]
    ThreadPanic(&'static str),
}

impl PipelineError {
    pub(crate) fn gst(side: &'static str, e: impl std::fmt::Display) -> Self {
        PipelineError::Gst { side, message: e.to_string() }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
