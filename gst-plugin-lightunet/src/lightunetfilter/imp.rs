//! The `lightunet` element: a video filter (in place) that runs a Light U-net on each frame's
//! region of interest, draws the lesion on the frame, attaches the mask to the buffer and posts a
//! message per frame.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert ! lightunet \
//!     ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4
//! gst-launch-1.0 v4l2src ! videoconvert ! lightunet mode=latest ! videoconvert ! autovideosink
//! ```
//!
//! - Caps: `video/x-raw`, format BGR, BGRx, RGB or RGBx, any size and frame rate (put
//!   `videoconvert` around it for other formats); the same on both sides.
//! - Properties (settable in NULL and READY; the model is loaded once, in `start`): `weights`
//!   (safetensors, PyTorch names; unset: the default Lighter@1 weights; `random`: random weights
//!   for plumbing runs), `model` (`unet`, `light`, `lighter@C`; unset: detected from the
//!   weights), `device` (`cpu`, `cuda`, `cuda:N`, `auto`), `dtype` (`f32`, `f16`, `bf16`;
//!   reduced precision on CUDA only), `threshold`, `roi` (`x,y,w,h`; unset: the whole frame),
//!   `overlay` (contour, fill, both, none), `smooth` (weight of the previous probability maps),
//!   `cleanup` (keep one component, filled; off: every component), `keep` (which one:
//!   `confident`, the highest mean probability, or `largest`, the original's), `mode`
//!   (`every-frame`: each buffer waits for its own mask; `latest`: buffers pass at once with the
//!   newest mask, the model on its own thread on the newest frame).
//! - Metadata: a `GstVideoRegionOfInterestMeta` of type [`ROI_TYPE`] on each buffer that has a
//!   lesion, its rectangle the lesion's bounding box in frame pixels, with one parameter
//!   structure [`MASK_PARAMS`]: `mask` (a `GstBuffer` of `mask-width * mask-height` bytes, row by
//!   row, 255 = lesion, 0 = background, at the model's size), `mask-width`, `mask-height`,
//!   `roi-x`, `roi-y`, `roi-width`, `roi-height` (the frame rectangle the mask covers: frame pixel
//!   `roi-x + dx` takes mask column `min(floor((2 dx + 1) * mask-width / (2 roi-width)),
//!   mask-width - 1)`, rows likewise: the pixel-centred nearest scaling the overlay is drawn with),
//!   `frame` (the frame the mask was made from), `area` (pixels), `mean-probability`.
//! - Messages: one element message [`MESSAGE_NAME`] per frame: `frame` (count from 0), `pts`,
//!   `has-mask` (latest mode: false until the first mask), `lesion`, `area`, `x`, `y`, `width`,
//!   `height` (bounding box), `centroid-x`, `centroid-y`, `diameter` (longest, pixels),
//!   `mean-probability`, `latency-ms` (every-frame: this frame's preprocessing, model and
//!   post-processing; latest: from the mask's frame's submission to its mask), `mask-age-frames`
//!   and `mask-age-ms` (0 in every-frame mode), `fresh` (the first frame to get this mask).
//! - Errors are posted on the bus (`element_error`), never panics: a missing or mismatched
//!   weights file or a bad setting fails `start` (READY -> PAUSED), a failing frame returns a
//!   flow error.

use std::str::FromStr;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use candle_core::{DType, Device};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::subclass::prelude::*;
use gst_video::video_frame::IsVideoFrame;
use gst_video::VideoFrameExt;

use lightunet::device::{parse_device, parse_dtype};
use lightunet::metrics::Mask;
use lightunet::postprocess::Cleanup;
use lightunet::model::{detect_variant, InferenceNet, UNet, Variant};
use lightunet::pipeline::{
    FrameLayout, FrameProcessor, FrameView, LatestInput, LatestMask, LesionStats, Mode as PipelineMode, OverlayStyle,
    PipelineError, PixelFormat, ProcessConfig, Roi, Segmenter, UNetSegmenter,
};

use lightunet::assets::Lookup;
use super::{Keep, Mode, Overlay};

/// The element message's structure name.
pub const MESSAGE_NAME: &str = "lightunet";
/// The region-of-interest meta's type.
pub const ROI_TYPE: &str = "lesion";
/// The name of the meta's parameter structure that carries the mask.
pub const MASK_PARAMS: &str = "lightunet/mask";

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("lightunet", gst::DebugColorFlags::empty(), Some("Light U-net lesion segmentation"))
});

const FORMATS: [gst_video::VideoFormat; 4] =
    [gst_video::VideoFormat::Bgr, gst_video::VideoFormat::Bgrx, gst_video::VideoFormat::Rgb, gst_video::VideoFormat::Rgbx];

fn pixel_format(f: gst_video::VideoFormat) -> Option<PixelFormat> {
    match f {
        gst_video::VideoFormat::Bgr => Some(PixelFormat::Bgr),
        gst_video::VideoFormat::Bgrx => Some(PixelFormat::Bgrx),
        gst_video::VideoFormat::Rgb => Some(PixelFormat::Rgb),
        gst_video::VideoFormat::Rgbx => Some(PixelFormat::Rgbx),
        _ => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct Settings {
    weights: Option<String>,
    model: Option<String>,
    device: String,
    dtype: String,
    threshold: f32,
    roi: Option<String>,
    overlay: Overlay,
    smooth: f32,
    cleanup: bool,
    keep: Keep,
    mode: Mode,
}

impl Default for Settings {
    fn default() -> Self {
        let p = ProcessConfig::default();
        Settings {
            weights: None,
            model: None,
            device: "auto".into(),
            dtype: "f32".into(),
            threshold: p.threshold,
            roi: None,
            overlay: Overlay::Contour,
            smooth: p.smooth,
            cleanup: p.cleanup != Cleanup::None,
            keep: match p.cleanup {
                Cleanup::Largest => Keep::Largest,
                Cleanup::Confident | Cleanup::None => Keep::Confident,
            },
            mode: Mode::EveryFrame,
        }
    }
}

enum Engine {
    /// The segmenter runs in the streaming thread on each buffer.
    EveryFrame(Box<dyn Segmenter>),
    Latest(LatestMask),
    /// The latest-mask worker failed; its error was posted.
    Failed,
}

/// The mask of the latest mode's current result as a buffer, made once per result.
struct MaskBuffer {
    id: u64,
    buffer: gst::Buffer,
}

struct State {
    processor: FrameProcessor,
    engine: Engine,
    /// Frames seen since `start`.
    seq: u64,
    mask_buffer: Option<MaskBuffer>,
}

/// What one frame got, for the meta and the message.
struct FrameOutcome {
    seq: u64,
    pts: Option<gst::ClockTime>,
    has_mask: bool,
    stats: Option<LesionStats>,
    latency_ms: f64,
    age_frames: u64,
    age_ms: f64,
    fresh: bool,
    /// The mask for the meta (when there is a lesion): the buffer, its size, the frame rectangle
    /// it covers and the frame it came from.
    mask: Option<(gst::Buffer, (usize, usize), Roi, u64)>,
}

#[derive(Default)]
pub struct LightUnetFilter {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for LightUnetFilter {
    const NAME: &'static str = "GstLightUnet";
    type Type = super::LightUnetFilter;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for LightUnetFilter {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("weights")
                    .nick("Weights")
                    .blurb("Weights file (safetensors, PyTorch names); unset: the default Lighter@1 weights; `random`: random weights (plumbing runs only)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Variant: unet, light or lighter@C; unset: detected from the weights")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("cpu, cuda, cuda:N or auto (the GPU when one works)")
                    .default_value(Some(d.device.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("dtype")
                    .nick("Data type")
                    .blurb("f32, f16 or bf16 (reduced precision on CUDA only)")
                    .default_value(Some(d.dtype.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Threshold")
                    .blurb("Probability above which a pixel is lesion (below 1)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.threshold)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("roi")
                    .nick("Region of interest")
                    .blurb("x,y,w,h in frame pixels: the part of the frame the model sees; unset: the whole frame")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder("overlay")
                    .nick("Overlay")
                    .blurb("How the lesion is drawn on the frame")
                    .default_value(d.overlay)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("smooth")
                    .nick("Temporal smoothing")
                    .blurb("Weight of the previous frames' probabilities, 0 (off) to below 1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.smooth)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("cleanup")
                    .nick("Clean-up")
                    .blurb("Keep one connected component, filled (which one: keep); off: every component")
                    .default_value(d.cleanup)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder("keep")
                    .nick("Kept component")
                    .blurb("Which component the clean-up keeps: confident (highest mean probability) or largest (the original's)")
                    .default_value(d.keep)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder("mode")
                    .nick("Mode")
                    .blurb("every-frame: each frame waits for its own mask (files); latest: frames pass at the source's rate with the newest mask (live)")
                    .default_value(d.mode)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        // GObject checks the value's type against the spec before calling: a mismatch cannot
        // reach here, but it is logged, not unwrapped, all the same.
        let text = |v: &glib::Value| v.get::<Option<String>>().map(|o| o.filter(|t| !t.is_empty())).map_err(|e| e.to_string());
        let r: Result<(), String> = (|| {
            match pspec.name() {
                "weights" => s.weights = text(value)?,
                "model" => s.model = text(value)?,
                "device" => s.device = text(value)?.unwrap_or_else(|| "auto".into()),
                "dtype" => s.dtype = text(value)?.unwrap_or_else(|| "f32".into()),
                "threshold" => s.threshold = value.get::<f32>().map_err(|e| e.to_string())?,
                "roi" => s.roi = text(value)?,
                "overlay" => s.overlay = value.get::<Overlay>().map_err(|e| e.to_string())?,
                "smooth" => s.smooth = value.get::<f32>().map_err(|e| e.to_string())?,
                "cleanup" => s.cleanup = value.get::<bool>().map_err(|e| e.to_string())?,
                "keep" => s.keep = value.get::<Keep>().map_err(|e| e.to_string())?,
                "mode" => s.mode = value.get::<Mode>().map_err(|e| e.to_string())?,
                other => return Err(format!("no property `{other}`")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            gst::warning!(CAT, imp = self, "property `{}`: {e}", pspec.name());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "weights" => s.weights.to_value(),
            "model" => s.model.to_value(),
            "device" => s.device.to_value(),
            "dtype" => s.dtype.to_value(),
            "threshold" => s.threshold.to_value(),
            "roi" => s.roi.to_value(),
            "overlay" => s.overlay.to_value(),
            "smooth" => s.smooth.to_value(),
            "cleanup" => s.cleanup.to_value(),
            "keep" => s.keep.to_value(),
            "mode" => s.mode.to_value(),
            // Only the properties above are installed: GObject asks for no other.
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for LightUnetFilter {}

impl ElementImpl for LightUnetFilter {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Light U-net lesion segmentation",
                "Filter/Effect/Video/Analyzer",
                "Finds and outlines lesions in ultrasound video (Light U-net family); attaches the mask as a region-of-interest meta and posts a message per frame",
                "lightunet",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new().format_list(FORMATS).build();
            [gst::PadDirection::Sink, gst::PadDirection::Src]
                .into_iter()
                .filter_map(|dir| {
                    let name = if dir == gst::PadDirection::Sink { "sink" } else { "src" };
                    // Static, valid caps: this cannot fail; were it to, the element would have
                    // no such pad rather than panic.
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).ok()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for LightUnetFilter {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let state = self.load(&settings)?;
        *lock(&self.state) = Some(state);
        gst::info!(CAT, imp = self, "started");
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = lock(&self.state).take();
        if let Some(State { engine: Engine::Latest(latest), .. }) = state {
            match latest.stop() {
                Ok(c) => gst::info!(
                    CAT,
                    imp = self,
                    "latest mode: {} frames submitted, {} replaced, {} masks; {} frames with a fresh mask, {} held, {} without",
                    c.submitted,
                    c.replaced,
                    c.inferred,
                    c.fresh,
                    c.held,
                    c.without_mask
                ),
                Err(e) => return Err(gst::error_msg!(gst::StreamError::Failed, ("lightunet: {e}"))),
            }
        }
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }
}

impl VideoFilterImpl for LightUnetFilter {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        _outcaps: &gst::Caps,
        _out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        if pixel_format(in_info.format()).is_none() {
            return Err(gst::loggable_error!(CAT, "unsupported caps {incaps}"));
        }
        gst::debug!(CAT, imp = self, "caps {incaps}");
        Ok(())
    }

    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = lock(&self.state);
        let result = match guard.as_mut() {
            Some(state) => self.process(state, frame).map_err(|e| e.to_string()),
            None => Err("a frame arrived before the model was loaded".to_string()),
        };
        // Messages are posted without the state locked: a bus handler may call back into us.
        drop(guard);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Failed, ("lightunet: {e}"));
                return Err(gst::FlowError::Error);
            }
        };
        if let (Some(stats), Some((mask, size, roi, from))) = (&outcome.stats, &outcome.mask) {
            // SAFETY: the frame maps this very buffer, which GStreamer handed to transform_ip
            // writable; a meta is added next to the mapped memory, not into it. The frame only
            // gives out an immutable buffer reference (gstreamer-rs issue 549); gst-plugins-rs's
            // image overlay (video/image) attaches its meta the same way.
            let buffer = unsafe { gst::BufferRef::from_mut_ptr(frame.as_raw().buffer) };
            attach_meta(buffer, stats, mask.clone(), *size, *roi, *from);
        }
        self.post(&outcome);
        Ok(gst::FlowSuccess::Ok)
    }
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn attach_meta(buffer: &mut gst::BufferRef, stats: &LesionStats, mask: gst::Buffer, size: (usize, usize), roi: Roi, from: u64) {
    let [x, y, w, h] = stats.bbox.map(u32_of);
    let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, ROI_TYPE, (x, y, w, h));
    meta.add_param(
        gst::Structure::builder(MASK_PARAMS)
            .field("mask", mask)
            .field("mask-width", u32_of(size.0))
            .field("mask-height", u32_of(size.1))
            .field("roi-x", u32_of(roi.x))
            .field("roi-y", u32_of(roi.y))
            .field("roi-width", u32_of(roi.w))
            .field("roi-height", u32_of(roi.h))
            .field("frame", from)
            .field("area", stats.area_px as u64)
            .field("mean-probability", stats.mean_probability)
            .build(),
    );
}

/// The mask as bytes (255 lesion, 0 background) in a buffer of its own.
fn mask_buffer(mask: &Mask) -> gst::Buffer {
    gst::Buffer::from_mut_slice(mask.data.iter().map(|&on| if on { 255u8 } else { 0 }).collect::<Vec<u8>>())
}

impl LightUnetFilter {
    /// Loads the model and starts the latest-mask worker: everything a frame needs, once.
    fn load(&self, s: &Settings) -> Result<State, gst::ErrorMessage> {
        let settings_err = |m: String| gst::error_msg!(gst::LibraryError::Settings, ("lightunet: {m}"));
        let roi = s.roi.as_deref().map(Roi::from_str).transpose().map_err(settings_err)?;
        let mut cfg = ProcessConfig {
            mode: match s.mode {
                Mode::EveryFrame => PipelineMode::Recorded,
                Mode::Latest => PipelineMode::Live,
            },
            batch: 1,
            roi,
            smooth: s.smooth,
            cleanup: match (s.cleanup, s.keep) {
                (false, _) => Cleanup::None,
                (true, Keep::Confident) => Cleanup::Confident,
                (true, Keep::Largest) => Cleanup::Largest,
            },
            threshold: s.threshold,
            ..Default::default()
        };
        cfg.overlay.style = match s.overlay {
            Overlay::Contour => OverlayStyle::Contour,
            Overlay::Fill => OverlayStyle::Fill,
            Overlay::Both => OverlayStyle::Both,
            Overlay::None => OverlayStyle::None,
        };
        cfg.validate().map_err(|e| settings_err(e.to_string()))?;
        let device = parse_device(&s.device).map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("lightunet: {e}")))?;
        let dtype = parse_dtype(&s.dtype).map_err(|e| settings_err(e.to_string()))?;
        if device.is_cpu() && dtype != DType::F32 {
            return Err(settings_err(format!("dtype {}: the CPU runs in f32 only", s.dtype)));
        }
        let asked = s.model.as_deref().map(Variant::from_str).transpose().map_err(|e| settings_err(format!("model: {e}")))?;
        let net = load_net(s.weights.as_deref(), asked, &device)?;
        let net = net.to_device_dtype(&device, dtype).map_err(|e| settings_err(e.to_string()))?;
        gst::info!(CAT, imp = self, "model {} on {:?} ({:?})", net.variant(), device, dtype);
        let segmenter: Box<dyn Segmenter> = Box::new(UNetSegmenter::new(net));
        let engine = match s.mode {
            Mode::EveryFrame => Engine::EveryFrame(segmenter),
            Mode::Latest => Engine::Latest(
                LatestMask::start(segmenter, &cfg).map_err(|e| gst::error_msg!(gst::CoreError::Thread, ("lightunet: {e}")))?,
            ),
        };
        Ok(State { processor: FrameProcessor::new(cfg, None), engine, seq: 0, mask_buffer: None })
    }

    /// One frame: its mask (own or latest), drawn in place; what it got.
    fn process(&self, state: &mut State, frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>) -> Result<FrameOutcome, PipelineError> {
        let t0 = Instant::now();
        let seq = state.seq;
        state.seq += 1;
        let pts = frame.buffer().pts();
        let frame_err = |message: String| PipelineError::Frame { seq, message };
        let format = pixel_format(frame.format()).ok_or_else(|| frame_err(format!("unsupported format {:?}", frame.format())))?;
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let stride = frame.plane_stride().first().and_then(|&s| usize::try_from(s).ok()).ok_or_else(|| frame_err("no usable plane stride".into()))?;
        let data = frame.plane_data_mut(0).map_err(|e| frame_err(format!("cannot map the frame: {e}")))?;
        let mut view = FrameView::new(data, FrameLayout { width, height, stride }, format)?;
        let roi = state.processor.roi_for(width, height)?;
        let mut out = FrameOutcome {
            seq,
            pts,
            has_mask: false,
            stats: None,
            latency_ms: 0.0,
            age_frames: 0,
            age_ms: 0.0,
            fresh: true,
            mask: None,
        };
        match &mut state.engine {
            Engine::EveryFrame(seg) => {
                state.processor.prepare(&[view.as_ref()], &[roi])?;
                let mut maps = state.processor.segment(seg.as_mut(), std::iter::once((seq, pts)), &[roi])?;
                let mut probs = maps.pop().ok_or_else(|| frame_err("the segmenter returned no map".into()))?;
                out.stats = state.processor.finish(seq, &mut view, roi, &mut probs)?;
                out.has_mask = true;
                out.latency_ms = t0.elapsed().as_secs_f64() * 1e3;
                if out.stats.is_some() {
                    let mask = state.processor.mask();
                    out.mask = Some((mask_buffer(mask), (mask.width, mask.height), roi, seq));
                }
            }
            Engine::Latest(latest) => {
                let mut chw = latest.input_buffer();
                state.processor.prepare_into(view.as_ref(), roi, &mut chw)?;
                let input = LatestInput { seq, pts, frame_size: (width, height), roi, chw, submitted: t0 };
                if let Err(e) = latest.submit(input) {
                    // The worker stopped: its own error is the cause.
                    let Engine::Latest(latest) = std::mem::replace(&mut state.engine, Engine::Failed) else { return Err(e) };
                    return Err(latest.stop().err().unwrap_or(e));
                }
                if let Some(held) = latest.for_frame(seq) {
                    let r = &held.result;
                    out.has_mask = true;
                    out.fresh = held.fresh;
                    out.age_frames = held.age_frames;
                    out.age_ms = held.age.as_secs_f64() * 1e3;
                    out.latency_ms = r.latency().as_secs_f64() * 1e3;
                    // A mask made for another frame size does not fit this frame: not drawn.
                    if r.frame_size == (width, height) {
                        state.processor.draw(&mut view, r.roi, &r.mask).map_err(|e| frame_err(e.to_string()))?;
                        out.stats = r.stats.clone();
                        if out.stats.is_some() {
                            let buffer = match &state.mask_buffer {
                                Some(b) if b.id == r.id => b.buffer.clone(),
                                _ => {
                                    let buffer = mask_buffer(&r.mask);
                                    state.mask_buffer = Some(MaskBuffer { id: r.id, buffer: buffer.clone() });
                                    buffer
                                }
                            };
                            out.mask = Some((buffer, (r.mask.width, r.mask.height), r.roi, r.seq));
                        }
                    }
                }
            }
            Engine::Failed => return Err(PipelineError::ThreadStopped { thread: "latest mask" }),
        }
        Ok(out)
    }

    fn post(&self, o: &FrameOutcome) {
        let s = o.stats.clone().unwrap_or_default();
        let [x, y, w, h] = s.bbox.map(u32_of);
        let structure = gst::Structure::builder(MESSAGE_NAME)
            .field("frame", o.seq)
            .field("pts", o.pts)
            .field("has-mask", o.has_mask)
            .field("lesion", o.stats.is_some())
            .field("area", s.area_px as u64)
            .field("x", x)
            .field("y", y)
            .field("width", w)
            .field("height", h)
            .field("centroid-x", s.centroid[0])
            .field("centroid-y", s.centroid[1])
            .field("diameter", s.longest_diameter_px)
            .field("mean-probability", s.mean_probability)
            .field("latency-ms", o.latency_ms)
            .field("mask-age-frames", o.age_frames)
            .field("mask-age-ms", o.age_ms)
            .field("fresh", o.fresh)
            .build();
        let obj = self.obj();
        // Without a bus (an element outside any pipeline) there is nobody to tell.
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
    }
}

/// The network from a weights file (`None`: the default weights; `random`: random weights),
/// its variant as asked or detected from the file.
fn load_net(weights: Option<&str>, asked: Option<Variant>, device: &Device) -> Result<InferenceNet, gst::ErrorMessage> {
    let settings_err = |m: String| gst::error_msg!(gst::LibraryError::Settings, ("lightunet: {m}"));
    if weights == Some("random") {
        let variant = asked.unwrap_or(Variant::Lighter(1));
        let map = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        return UNet::new(variant, vb).and_then(|n| n.fold(device, DType::F32)).map_err(|e| settings_err(e.to_string()));
    }
    let path = match weights {
        Some(p) => std::path::PathBuf::from(p),
        // The lookup every subcommand uses: LIGHTUNET_WEIGHTS, the user's and the system's
        // folders, then the weights embedded in the library.
        None => {
            let w = Lookup::from_env()
                .weights(None)
                .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ("lightunet: default weights: {e}")))?;
            match w.path() {
                // A user's or the system's weights file: loaded like any file below.
                Some(p) => p.to_path_buf(),
                None => {
                    let variant = match asked {
                        Some(v) => v,
                        None => w.config().map_err(|e| settings_err(e.to_string()))?.variant.unwrap_or(Variant::Lighter(1)),
                    };
                    return w.load(variant, device).map_err(|e| settings_err(format!("weights {w}: {e}")));
                }
            }
        }
    };
    if !path.is_file() {
        return Err(gst::error_msg!(gst::ResourceError::NotFound, ("lightunet: weights {} do not exist", path.display())));
    }
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
        gst::error_msg!(gst::ResourceError::OpenRead, ("lightunet: weights {}: not a readable safetensors file: {e}", path.display()))
    })?;
    let variant = match asked {
        Some(v) => v,
        None => {
            let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
            detect_variant(&shapes).map_err(|e| settings_err(format!("weights {}: {e}; set the `model` property", path.display())))?
        }
    };
    InferenceNet::from_tensors(tensors, variant, device).map_err(|e| settings_err(format!("weights {}: {e}", path.display())))
}
