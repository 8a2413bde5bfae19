//! The pipeline's error type: every variant says which side (input, output, model, a thread) failed
//! and carries GStreamer's own message where there is one. Kinds a caller can act on have their
//! own variant (a missing input, an output that would destroy data or cannot be written, a stopped
//! thread, a buffer too small for its frame); [`PipelineError::Config`] is only for settings the
//! user got wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),

    #[error("invalid pipeline description `{description}`: {message}")]
    Parse { description: String, message: String },

    /// A setting or a named pipeline the user got wrong (checked before anything starts, except a
    /// `--roi` that does not fit a frame, found at that frame).
    #[error("{0}")]
    Config(String),

    #[error("input file {} does not exist", .0.display())]
    MissingInput(PathBuf),

    #[error("{} is not a file", .0.display())]
    InputNotAFile(PathBuf),

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// An output that would destroy data, cannot be written where asked, or could not be moved
    /// into place (see [`crate::output`]). Boxed: its paths and roles would double the size of
    /// every `Result` of the pipeline.
    #[error(transparent)]
    Output(Box<crate::output::OutputError>),

    /// The `--metadata` file failed part-way (the video outputs were finalised, then discarded
    /// with it: a failed run leaves nothing behind).
    #[error("writing metadata: {}: {source}", path.display())]
    Metadata { path: PathBuf, source: std::io::Error },

    /// An error message posted on a pipeline's bus.
    #[error("{side} pipeline: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream { side: &'static str, message: String, debug: Option<String> },

    #[error("{side} pipeline: {message}")]
    Gst { side: &'static str, message: String },

    #[error("frame {seq}: {message}")]
    Frame { seq: u64, message: String },

    /// A buffer too short for the frame its layout describes, or rows wider than its stride.
    #[error("{what}: {len} bytes cannot hold a {width}x{height} frame of {bytes_per_pixel}-byte pixels in rows of {stride} bytes")]
    BufferSize { what: &'static str, width: usize, height: usize, stride: usize, bytes_per_pixel: usize, len: usize },

    #[error("a {width}x{height} frame is too large to address")]
    FrameTooLarge { width: usize, height: usize },

    /// The phantom could not draw a frame.
    #[error("phantom: {0}")]
    Phantom(String),

    #[error("no frame reached the output: nothing to plot")]
    NothingToPlot,

    #[error("plot: {0}")]
    Plot(String),

    #[error("model: {0}")]
    Model(#[from] crate::Error),

    #[error("cannot start the {thread} thread: {source}")]
    ThreadSpawn { thread: &'static str, source: std::io::Error },

    /// A worker thread panicked (a bug, or a segmenter that panics); the run ends with this.
    #[error("the {thread} thread panicked: {message}")]
    ThreadPanicked { thread: &'static str, message: String },

    /// A live source sent no frame within the first-frame timeout.
    #[error("no frame from the source `{input}` within {waited_s:.0} s: is it sending? (--first-frame-timeout sets the wait; `never` waits forever)")]
    NoFirstFrame { input: String, waited_s: f64 },

    /// Recorded: the input made no progress (no frame, no message) before its first frame.
    #[error("the input `{input}` made no progress for {waited_s:.0} s: no frame, no message from its pipeline (--input-timeout sets the wait; `never` waits forever)")]
    InputStalled { input: String, waited_s: f64 },

    /// The appsink callback panicked on a frame (reported instead of taking the process down).
    #[error("the capture callback failed at frame {seq}: {message}")]
    CallbackPanicked { seq: u64, message: String },

    /// A worker thread ended while its input was still open (its own error is reported at join).
    #[error("the {thread} thread stopped")]
    ThreadStopped { thread: &'static str },
}

impl From<crate::output::OutputError> for PipelineError {
    fn from(e: crate::output::OutputError) -> Self {
        PipelineError::Output(Box::new(e))
    }
}

impl PipelineError {
    /// A thread's panic, with the text of its payload (`panic!("...")` gives a `&str` or a
    /// `String`).
    pub(crate) fn panicked(thread: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        PipelineError::ThreadPanicked { thread, message: panic_message(payload) }
    }

    pub(crate) fn gst(side: &'static str, e: impl std::fmt::Display) -> Self {
        PipelineError::Gst { side, message: e.to_string() }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
