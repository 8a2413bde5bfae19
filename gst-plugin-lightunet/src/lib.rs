//! The `lightunet` GStreamer element: finds and outlines lesions in ultrasound video with the
//! Light U-net family, between a source and a sink, like DeepStream's `nvinfer` or DL Streamer's
//! `gvainference`:
//!
//! ```text
//! gst-launch-1.0 v4l2src ! videoconvert ! lightunet mode=latest ! videoconvert ! autovideosink
//! ```
//!
//! Built into `libgstlightunet.so` (`cargo build --release --workspace`; point
//! `GST_PLUGIN_PATH` at `target/release`). The per-frame work is the library's own
//! ([`lightunet::pipeline::FrameProcessor`], [`lightunet::pipeline::LatestMask`]): the element
//! and `lightunet process`/`live` run the same code. See `lightunetfilter` for the properties,
//! the caps, the metadata and the bus messages.

use gst::glib;

mod lightunetfilter;

pub use lightunetfilter::{Keep, Mode, Overlay, MASK_PARAMS, MESSAGE_NAME, ROI_TYPE};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    lightunetfilter::register(plugin)
}

gst::plugin_define!(
    lightunet,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    // The license GStreamer knows the plugin by (its list has no Apache-2.0).
    "unknown",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "lightunet",
    env!("BUILD_REL_DATE")
);
