//! The streaming pipeline: live and recorded ultrasound video in, annotated video out, measured.
//!
//! The path of one frame, from capture to sink:
//! ```text
//! {input: file | gst-launch | phantom} - {videoconvert} - {appsink BGR/GRAY8}
//!   -> appsink callback: copied once into a Frame (FrameBuffer of our own; source::capture_bgr)
//!   -> input queue (bounded; recorded: waits, live: drops the oldest)
//!   -> inference thread: Processor (ROI, model input, Segmenter, threshold, clean-up,
//!      statistics, overlay drawn into the same buffer) -> Processed { frame, masks, stats }
//!   -> queue (2) -> pusher thread: stamps into the Collector, Outputs::push
//!   -> {appsrc} - {videoconvert} - ... - {encoder/muxer by extension | gst-launch sink}
//!      video: the frame's own buffer, no copy; masks (when asked for): a GRAY8 copy
//! ```
//! The output pad probe stamps the frame at the sink and the collector finishes its record
//! (`--metadata` line, percentiles, counters).
//!
//! Live with [`Show::LatestMask`] (the default of `lightunet live`), the display thread
//! ([`display::Display`]) takes the inference and pusher threads' place: every frame is drawn
//! with the newest mask and pushed at once, and the model runs on the latest-mask worker
//! ([`LatestMask`], its own pool, niced) on the newest frame it can take.
//!
//! - [`config`]: typed settings, sources, sinks and the named pipelines of `pipelines/`.
//! - [`frame`]: a frame in flight: pixels, layout (sizes, checked), stream timing, stamps.
//! - [`source`]: the input pipeline, ending in the appsink, and the capture copy.
//! - [`inference`]: the [`Segmenter`] seam (fakes in tests) and the network behind it; the model
//!   input itself comes from [`crate::preprocess`].
//! - [`overlay`]: the per-frame processing on borrowed frames of any [`PixelFormat`]
//!   ([`FrameProcessor`], [`MaskStage`], [`draw_mask`]), shared with the GStreamer element;
//!   [`overlay::Processor`] wraps it for the inference thread.
//! - [`latest`]: the latest-mask worker for live video ([`LatestMask`]: the model on its own
//!   thread, on the newest frame; every frame drawn with the newest mask).
//! - [`display`]: live, latest-mask: the display thread's work on each frame.
//! - [`priority`]: per-thread nice values (the model and the recording under the display).
//! - [`sink`]: the output pipelines, by role ([`sink::Outputs`]: video, masks, the live
//!   recording).
//! - [`latency`]: per-frame stamps, counters, percentiles, `--metadata` lines.
//! - [`run`](mod@run): the appsink callback, the worker threads, the bus watch and ordered
//!   shutdown.
//! - [`error`]: the pipeline's error type.
//! - [`clip`]: phantom clips with ground-truth masks.
//! - [`plot`]: the latency plot of `bench pipeline`.

pub mod clip;
pub mod config;
pub mod display;
pub mod error;
pub mod frame;
pub mod inference;
pub mod latency;
pub mod latest;
pub mod overlay;
pub mod plot;
pub mod priority;
pub mod run;
pub mod sink;
pub mod source;

pub use config::{
    FramePattern, InvalidPipeline, Mode, Show, NamedPipeline, OutputFormat, OverlayConfig, OverlayStyle, PipelineListing, ProcessConfig,
    Roi, SinkSpec, SourceSpec,
};
pub use error::{PipelineError, Result};
pub use frame::{FrameLayout, FrameMask, FrameRef, FrameView, PixelFormat};
pub use inference::{SegmentInput, Segmenter, UNetSegmenter};
pub use latest::{HeldMask, LatestCounters, LatestInput, LatestMask, MaskResult, WorkerOptions};
pub use overlay::{draw_mask, FrameProcessor, MaskStage};
pub use latency::{end_to_end_thirds, Counters, FrameRecord, LesionStats, MaskRecord, MaskSummary, Percentiles, StageTimes, STAGE_NAMES};
pub use clip::write_phantom_clip;
pub use run::{run, run_staged, Job, Report};
