//! The `lightunet` element: a video filter that segments each frame's lesion and draws it in
//! place. What it does is in `imp.rs`; here are its public types and its registration.

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::{MASK_PARAMS, MESSAGE_NAME, ROI_TYPE};

/// How the mask is drawn on the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstLightunetOverlay")]
pub enum Overlay {
    /// The outline (the original: red, 2 px).
    #[default]
    #[enum_value(name = "Outline", nick = "contour")]
    Contour,
    #[enum_value(name = "Translucent fill", nick = "fill")]
    Fill,
    #[enum_value(name = "Fill and outline", nick = "both")]
    Both,
    /// Nothing drawn: metadata and messages only.
    #[enum_value(name = "Nothing drawn (metadata and messages only)", nick = "none")]
    None,
}

/// Which connected component the clean-up keeps (with `cleanup` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstLightunetKeep")]
pub enum Keep {
    /// The component with the highest mean probability (picks the lesion more often than size
    /// does on BUSI val).
    #[default]
    #[enum_value(name = "The most confident component", nick = "confident")]
    Confident,
    /// The largest component (the original's predict.py).
    #[enum_value(name = "The largest component (the original)", nick = "largest")]
    Largest,
}

/// When a frame leaves the element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstLightunetMode")]
pub enum Mode {
    /// Each frame waits for its own mask (files, offline work).
    #[default]
    #[enum_value(name = "Every frame waits for its own mask", nick = "every-frame")]
    EveryFrame,
    /// Frames pass at the source's rate with the newest mask; the model runs on its own thread
    /// on the newest frame (live sources).
    #[enum_value(name = "Frames pass at once with the latest mask", nick = "latest")]
    Latest,
}

glib::wrapper! {
    pub struct LightUnetFilter(ObjectSubclass<imp::LightUnetFilter>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Registers the element. (gst-plugins-rs also marks its enums as plugin API, for its generated
/// documentation; that needs GStreamer 1.18 features on the `gstreamer` crate, which would build
/// it differently for the library and the plugin, so it is left out.)
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "lightunet", gst::Rank::NONE, LightUnetFilter::static_type())
}
