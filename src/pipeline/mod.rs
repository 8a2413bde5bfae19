//! The streaming pipeline: live and recorded ultrasound video in, annotated video out, measured.
//!
//! ```text
//! {input: file | gst-launch | phantom} - {videoconvert} - {appsink BGR}
//!   -> bounded queue -> inference thread (ROI, 256x256 BGR /255, model, resize back, threshold,
//!      largest component, overlay on the full frame) -> queue -> pusher thread
//!   -> {appsrc} - {videoconvert} - ... - {encoder/muxer by extension | gst-launch sink}
//! ```
//! - [`config`]: typed settings, sources, sinks and the named pipelines of `pipelines/`.
//! - [`inference`]: the model input and the [`Segmenter`] seam (fakes in tests).
//! - [`overlay`]: per-frame post-processing and drawing.
//! - [`source`] / [`sink`]: the GStreamer ends.
//! - [`latency`]: per-frame stamps, counters, percentiles, `--metadata` lines.
//! - [`run`]: threads, buses and ordered shutdown.
//! - [`clip`]: phantom clips with ground-truth masks.
//! - [`plot`]: the latency plot of `bench pipeline`.

pub mod clip;
pub mod config;
pub mod error;
pub mod inference;
pub mod latency;
pub mod overlay;
pub mod plot;
pub mod run;
pub mod sink;
pub mod source;

pub use config::{Mode, NamedPipeline, OutputFormat, OverlayConfig, OverlayStyle, ProcessConfig, Roi, SinkSpec, SourceSpec};
pub use error::{PipelineError, Result};
pub use inference::{SegmentInput, Segmenter, UNetSegmenter};
pub use latency::{end_to_end_thirds, Counters, FrameRecord, Percentiles, StageTimes, STAGE_NAMES};
pub use clip::write_phantom_clip;
pub use run::{run, Job, Report};
