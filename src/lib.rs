//! lightunet: lesion segmentation in ultrasound images and video with the Light U-net family
//! (Li et al., "Light U-net for lesion segmentation in ultrasound images").
//!
//! - [`model`]: the networks (U-net, Light U-net, Lighter U-net@C), weights in PyTorch names.
//! - [`checkpoint`]: PyTorch `.pth` import without Python.
//! - [`metrics`]: medpy-style segmentation metrics; [`percentile`]: numpy's percentile.
//! - [`phantom`]: synthetic B-mode ultrasound video with ground truth.
//! - [`pipeline`]: the streaming pipeline (GStreamer in, annotated video out, latency).
//! - [`image_io`]: reading images and masks, pairing folders, writing PNGs.
//! - [`preprocess`]: image or frame to model input; [`resize`]: OpenCV's bilinear resize;
//!   [`roi`]: the part of a frame the model sees.
//! - [`postprocess`]: probability map to mask, largest component, contours and overlays.
//! - [`predict`]: offline inference and evaluation on image files.
//! - [`train`]: training with the original recipe.
//! - [`device`]: `--device`/`--dtype` names; [`atomic_write`]: files written atomically.
//! - [`assets`]: the default weights and the named pipelines, embedded, and the folders that
//!   override them (one lookup order for every subcommand and the GStreamer element).
//! - [`output`]: output safety: no output may be an input or another output; outputs written
//!   under temporary names and moved into place at the end.
//! - [`pixel`]: the packed frame formats (BGR, BGRx, RGB, RGBx) the pipeline and the element take.

pub mod assets;
pub mod atomic_write;
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod image_io;
pub mod metrics;
pub mod model;
pub mod output;
pub mod percentile;
pub mod phantom;
pub mod pipeline;
pub mod pixel;
pub mod postprocess;
pub mod predict;
pub mod preprocess;
pub mod raster;
pub mod resize;
pub mod roi;
pub mod train;

pub use error::{Error, Result};
