//! Per-frame work after capture: ROI, model input, segmenter, temporal smoothing, threshold,
//! the clean-up (one component), statistics, and the overlay drawn on the full-resolution frame.
//!
//! One implementation for every caller: [`FrameProcessor`] works on borrowed frames
//! ([`FrameRef`] to read, [`FrameView`] to draw: pixels, layout and [`PixelFormat`]), and
//! [`MaskStage`] turns a probability map into the mask and its statistics. The command line's
//! inference thread wraps them in [`Processor`] (owned BGR [`Frame`]s, batches, the `--masks`
//! output, the on-screen text); the GStreamer element (`gst-plugin-lightunet`) calls them on the
//! mapped buffers it is handed; the latest-mask worker ([`super::latest`]) runs a [`MaskStage`]
//! on its own thread and the element draws its masks with [`draw_mask`].
//!
//! The mask is computed at model size (threshold, the one component the clean-up rule keeps, its
//! holes filled) and mapped onto the ROI by pixel-centred nearest scaling ([`MaskScaling`]): statistics, outline, fill and the
//! `--masks` output are those of that scaled mask, computed per model pixel or per outline run,
//! never over the whole frame. Against resizing the probabilities to the ROI first (bilinear)
//! and thresholding there, the boundary moves by less than one model pixel (ROI/model size, about
//! 4 px at 1080p); `mean_probability` averages the model-size map over the lesion's blocks.
//! Buffers live in the processors, so steady-state frames do not allocate here (the segmenter's
//! output vector aside).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::config::{Mode, OverlayConfig, OverlayStyle, ProcessConfig, Roi};
use super::error::{PipelineError, Result};
use super::frame::{AsFrameRef, Frame, FrameLayout, FrameMask, FrameRef, FrameView, PixelFormat, GREY};
use super::inference::{SegmentInput, Segmenter};
use super::latency::{LesionStats, MaskRecord};
use crate::metrics::{Mask, ShapeError};
use crate::postprocess::{clean_up_into, Cleanup, ComponentScratch, MaskScaling};
use crate::preprocess::Preprocessor;

/// A processed frame, by output: the annotated picture for the video output, the full-frame mask
/// for the masks output when there is one, and the lesion for the metadata.
pub struct Processed {
    pub frame: Frame,
    /// `width * height` bytes, 0 or 255.
    pub masks: Option<FrameMask>,
    pub stats: Option<LesionStats>,
    /// Live: the mask the frame was drawn with and its age (`None`: recorded, or no mask yet).
    pub mask: Option<MaskRecord>,
}

/// From a probability map at model size to the lesion: temporal smoothing, threshold, the
/// clean-up (one component, filled), and the statistics of the mask mapped onto the ROI, in frame pixels.
pub struct MaskStage {
    threshold: f32,
    smooth: f32,
    cleanup: Cleanup,
    model_size: (usize, usize),
    /// Thresholded map and its cleaned-up mask, at model size.
    raw: Mask,
    mask: Mask,
    components: ComponentScratch,
    /// Model size -> ROI size (of the last run).
    scaling: MaskScaling,
    /// Smoothed probability map at model size, with the frame size it belongs to.
    ema: Option<((usize, usize), Vec<f32>)>,
}

impl MaskStage {
    pub fn new(cfg: &ProcessConfig) -> MaskStage {
        MaskStage {
            threshold: cfg.threshold,
            smooth: cfg.smooth,
            cleanup: cfg.cleanup,
            model_size: cfg.model_size,
            raw: Mask::new(0, 0),
            mask: Mask::new(0, 0),
            components: ComponentScratch::default(),
            scaling: MaskScaling::default(),
            ema: None,
        }
    }

    /// The mask of a frame of `frame_size` whose `roi` the model saw, from the segmenter's map
    /// (`probs`, model size; smoothed in place when smoothing is on). Returns the lesion's
    /// statistics in frame pixels (`None`: no lesion); the mask itself is [`MaskStage::mask`].
    pub fn run(&mut self, seq: u64, probs: &mut [f32], frame_size: (usize, usize), roi: Roi) -> Result<Option<LesionStats>> {
        let (mw, mh) = self.model_size;
        if probs.len() != mw * mh {
            return Err(PipelineError::Frame {
                seq,
                message: format!("the segmenter returned {} values for a {mw}x{mh} input", probs.len()),
            });
        }
        self.smooth(probs, frame_size);
        let thr = self.threshold;
        self.raw.width = mw;
        self.raw.height = mh;
        self.raw.data.clear();
        self.raw.data.extend(probs.iter().map(|&p| p > thr)); // strict, NaN is background
        clean_up_into(&self.raw, probs, self.cleanup, &mut self.components, &mut self.mask)
            .map_err(|e| PipelineError::Frame { seq, message: e.to_string() })?;
        self.scaling.set_sizes(mw, mh, roi.w, roi.h);
        let stats = self.scaling.stats(&self.mask, probs).map_err(|e| PipelineError::Frame { seq, message: e.to_string() })?;
        Ok(stats.map(|s| LesionStats {
            area_px: s.area_px,
            bbox: [s.bbox.0 + roi.x, s.bbox.1 + roi.y, s.bbox.2, s.bbox.3],
            centroid: [s.centroid.0 + roi.x as f64, s.centroid.1 + roi.y as f64],
            longest_diameter_px: s.longest_diameter_px,
            mean_probability: s.mean_probability,
        }))
    }

    /// The mask of the last [`MaskStage::run`], at model size.
    pub fn mask(&self) -> &Mask {
        &self.mask
    }

    /// Writes 255 at the lesion pixels of a `width`-wide, one-byte-per-pixel full-frame mask
    /// (`out`), the last run's mask mapped onto `roi`; other bytes are untouched.
    pub fn write_mask(&self, out: &mut [u8], width: usize, roi: Roi) -> Result<(), ShapeError> {
        let start = roi.y.checked_mul(width).and_then(|v| v.checked_add(roi.x)).ok_or(ShapeError::Overflow { what: "mask" })?;
        let len = out.len();
        let out = out.get_mut(start..).ok_or(ShapeError::Length { what: "mask buffer for the ROI", expected: start, got: len })?;
        self.scaling.write_mask(&self.mask, out, width, 255)
    }

    fn smooth(&mut self, probs: &mut [f32], size: (usize, usize)) {
        let a = self.smooth;
        if a <= 0.0 {
            return;
        }
        match &mut self.ema {
            Some((s, prev)) if *s == size && prev.len() == probs.len() => {
                for (p, q) in probs.iter_mut().zip(prev.iter_mut()) {
                    *p = (1.0 - a) * *p + a * *q;
                    *q = *p;
                }
            }
            _ => self.ema = Some((size, probs.to_vec())),
        }
    }
}

/// Draws `mask` (model size), mapped onto `roi` of the frame by `scaling`, as `overlay` says:
/// translucent fill, then outline, in the overlay's colour put into the frame's channel order.
/// The text of [`OverlayConfig::text`] is the caller's.
pub fn draw_mask(view: &mut FrameView, roi: Roi, mask: &Mask, scaling: &mut MaskScaling, overlay: &OverlayConfig) -> Result<(), ShapeError> {
    if overlay.style == OverlayStyle::None {
        return Ok(());
    }
    let format = view.format();
    let stride = view.layout().stride;
    scaling.set_sizes(mask.width, mask.height, roi.w, roi.h);
    let start = roi
        .y
        .checked_mul(stride)
        .and_then(|v| v.checked_add(roi.x.checked_mul(format.bytes_per_pixel())?))
        .ok_or(ShapeError::Overflow { what: "frame" })?;
    let data = view.data_mut();
    let len = data.len();
    let sub = data.get_mut(start..).ok_or(ShapeError::Length { what: "frame buffer for the ROI", expected: start, got: len })?;
    if matches!(overlay.style, OverlayStyle::Fill | OverlayStyle::Both) {
        scaling.fill_translucent(sub, stride, format, mask, overlay.color_bgr, overlay.fill_alpha)?;
    }
    if matches!(overlay.style, OverlayStyle::Contour | OverlayStyle::Both) {
        scaling.draw_contour(sub, stride, format, mask, overlay.color_bgr, overlay.thickness)?;
    }
    Ok(())
}

/// The per-frame processing on borrowed frames: the ROI of each frame, the model inputs of a
/// batch, the segmenter, the [`MaskStage`] and the overlay. Holds every buffer it needs.
pub struct FrameProcessor {
    cfg: ProcessConfig,
    /// The ROI used when the config has none (the phantom's image region).
    default_roi: Option<Roi>,
    warned_roi: bool,
    /// One per frame of a batch (each caches its resize taps).
    pre: Vec<Preprocessor>,
    /// The batch's model inputs, `3 * model size` values per frame.
    input: Vec<f32>,
    stage: MaskStage,
}

impl FrameProcessor {
    pub fn new(cfg: ProcessConfig, default_roi: Option<Roi>) -> FrameProcessor {
        let stage = MaskStage::new(&cfg);
        FrameProcessor { cfg, default_roi, warned_roi: false, pre: Vec::new(), input: Vec::new(), stage }
    }

    pub fn config(&self) -> &ProcessConfig {
        &self.cfg
    }

    /// Values in one frame's model input: `3 * width * height` of the model size.
    pub fn input_len(&self) -> usize {
        3 * self.cfg.model_size.0 * self.cfg.model_size.1
    }

    /// The part of a `w x h` frame the model sees: the configured ROI (an error when it does not
    /// fit), else the default one, else the whole frame.
    pub fn roi_for(&mut self, w: usize, h: usize) -> Result<Roi> {
        match self.cfg.roi.or(self.default_roi) {
            None => Ok(Roi::full(w, h)),
            Some(r) => match r.check(w, h) {
                Ok(r) => Ok(r),
                // The user's ROI is an error; a default one (phantom) that no longer fits after a
                // resolution change falls back to the whole frame.
                Err(e) if self.cfg.roi.is_some() => Err(PipelineError::Config(e.to_string())),
                Err(_) => {
                    if !self.warned_roi {
                        tracing::warn!("the default ROI does not fit the {w}x{h} frame; using the whole frame");
                        self.warned_roi = true;
                    }
                    Ok(Roi::full(w, h))
                }
            },
        }
    }

    /// Makes the model inputs of a batch (one ROI per frame), kept for [`FrameProcessor::segment`].
    pub fn prepare<F: AsFrameRef>(&mut self, frames: &[F], rois: &[Roi]) -> Result<()> {
        let (mw, mh) = self.cfg.model_size;
        let len = 3 * mw * mh;
        if self.pre.len() < frames.len() {
            self.pre.resize_with(frames.len(), Preprocessor::new);
        }
        self.input.resize(len * frames.len(), 0.0);
        // Frames of a batch are independent: their crops and resizes run side by side.
        self.input.par_chunks_mut(len).zip(self.pre.par_iter_mut()).zip(frames.par_iter().zip(rois)).try_for_each(
            |((out, pre), (f, &roi))| -> Result<()> {
                let f = f.frame_ref()?;
                pre.run_format(f.data(), f.layout().stride, f.format(), roi, (mw, mh), out)?;
                Ok(())
            },
        )
    }

    /// One frame's model input into `out` ([`FrameProcessor::input_len`] values), for a
    /// segmenter that runs elsewhere (the latest-mask worker).
    pub fn prepare_into(&mut self, frame: FrameRef, roi: Roi, out: &mut [f32]) -> Result<()> {
        if self.pre.is_empty() {
            self.pre.push(Preprocessor::new());
        }
        self.pre[0].run_format(frame.data(), frame.layout().stride, frame.format(), roi, self.cfg.model_size, out)?;
        Ok(())
    }

    /// Runs the segmenter on the inputs of the last [`FrameProcessor::prepare`], in one
    /// [`Segmenter::segment_batch`] call; `ids` are the frames' `(seq, pts)`, in order.
    pub fn segment(
        &mut self,
        seg: &mut dyn Segmenter,
        ids: impl ExactSizeIterator<Item = (u64, Option<gst::ClockTime>)>,
        rois: &[Roi],
    ) -> Result<Vec<Vec<f32>>> {
        let (mw, mh) = self.cfg.model_size;
        let n = ids.len();
        let mut first = None;
        let inputs: Vec<SegmentInput> = ids
            .zip(rois)
            .zip(self.input.chunks_exact(3 * mw * mh))
            .map(|(((seq, pts), &roi), chw)| {
                first.get_or_insert(seq);
                SegmentInput { seq, pts, chw, width: mw, height: mh, roi }
            })
            .collect();
        let maps = seg.segment_batch(&inputs)?;
        if maps.len() != n {
            return Err(PipelineError::Frame {
                seq: first.unwrap_or(0),
                message: format!("the segmenter returned {} maps for {n} frames", maps.len()),
            });
        }
        Ok(maps)
    }

    /// Everything after the model for one frame: the [`MaskStage`], then the overlay drawn on
    /// `view` (fill and outline; not the text). Returns the lesion's statistics.
    pub fn finish(&mut self, seq: u64, view: &mut FrameView, roi: Roi, probs: &mut [f32]) -> Result<Option<LesionStats>> {
        let stats = self.stage.run(seq, probs, view.layout().size(), roi)?;
        let FrameProcessor { cfg, stage, .. } = self;
        draw_mask(view, roi, &stage.mask, &mut stage.scaling, &cfg.overlay).map_err(|e| PipelineError::Frame { seq, message: e.to_string() })?;
        Ok(stats)
    }

    /// The mask of the last [`FrameProcessor::finish`], at model size.
    pub fn mask(&self) -> &Mask {
        self.stage.mask()
    }

    pub fn stage(&self) -> &MaskStage {
        &self.stage
    }

    /// Draws a mask made elsewhere (by the latest-mask worker, for `roi`) on `view`.
    pub fn draw(&mut self, view: &mut FrameView, roi: Roi, mask: &Mask) -> Result<(), ShapeError> {
        draw_mask(view, roi, mask, &mut self.stage.scaling, &self.cfg.overlay)
    }

    /// Writes 255 at the lesion pixels of a mask made elsewhere (model size, for `roi`) into a
    /// `width`-wide, one-byte-per-pixel full-frame mask (`out`); other bytes are untouched.
    pub fn write_mask(&mut self, mask: &Mask, roi: Roi, out: &mut [u8], width: usize) -> Result<(), ShapeError> {
        let start = roi.y.checked_mul(width).and_then(|v| v.checked_add(roi.x)).ok_or(ShapeError::Overflow { what: "mask" })?;
        let len = out.len();
        let out = out.get_mut(start..).ok_or(ShapeError::Length { what: "mask buffer for the ROI", expected: start, got: len })?;
        let scaling = &mut self.stage.scaling;
        scaling.set_sizes(mask.width, mask.height, roi.w, roi.h);
        scaling.write_mask(mask, out, width, 255)
    }
}

/// The command line's inference thread: [`FrameProcessor`] over owned BGR [`Frame`]s, in
/// batches, with the `--masks` output and the on-screen text (frame rate, latency, area).
pub struct Processor {
    core: FrameProcessor,
    /// There is a masks output.
    want_masks: bool,
    /// The time between finished frames: the fps shown.
    interval: FrameInterval,
}

/// A moving average of the time between frames, from the instants they pass a point. Averaging
/// the intervals, not their inverses, keeps a batch's burst of frames (microseconds apart) from
/// showing as hundreds of fps.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FrameInterval {
    last: Option<Instant>,
    /// Seconds; 0 until two frames have passed.
    ema: f64,
}

impl FrameInterval {
    pub(crate) fn tick(&mut self, at: Instant) {
        if let Some(prev) = self.last.replace(at) {
            let dt = at.saturating_duration_since(prev).as_secs_f64();
            self.ema = if self.ema == 0.0 { dt } else { 0.9 * self.ema + 0.1 * dt };
        }
    }

    /// The average interval, once two frames have passed.
    pub(crate) fn average(&self) -> Option<Duration> {
        (self.ema > 0.0).then(|| Duration::from_secs_f64(self.ema))
    }

    /// Frames per second (0 until known), for the on-screen text.
    pub(crate) fn fps(&self) -> f64 {
        if self.ema > 0.0 {
            1.0 / self.ema
        } else {
            0.0
        }
    }
}

/// `--text`: `text` at the top left of a BGR frame, white on black.
pub(crate) fn draw_status_text(frame: &mut Frame, text: &str) {
    let FrameLayout { width, height, stride } = frame.layout;
    let bpp = PixelFormat::Bgr.bytes_per_pixel();
    crate::raster::draw_text_px(&mut frame.data, (width, height, stride), bpp, (8, 8), 2, text, [255; 3], Some([0; 3]));
}

impl Processor {
    pub fn new(cfg: ProcessConfig, default_roi: Option<Roi>, want_masks: bool) -> Processor {
        Processor { core: FrameProcessor::new(cfg, default_roi), want_masks, interval: FrameInterval::default() }
    }

    /// How many queued frames one model run may take: recorded mode's batch, 1 live (where a
    /// batch would only add latency; the newest frame is what matters there).
    pub fn max_batch(&self) -> usize {
        match self.core.cfg.mode {
            Mode::Recorded => self.core.cfg.batch.max(1),
            Mode::Live => 1,
        }
    }

    /// Processes frames in order, their model inputs in one [`Segmenter::segment_batch`] call.
    pub fn process_batch(&mut self, frames: Vec<Frame>, seg: &mut dyn Segmenter) -> Result<Vec<Processed>> {
        let rois = frames.iter().map(|f| self.core.roi_for(f.layout.width, f.layout.height)).collect::<Result<Vec<_>>>()?;
        self.core.prepare(&frames, &rois)?;
        let start = Instant::now();
        let maps = self.core.segment(seg, frames.iter().map(|f| (f.seq, f.pts)), &rois)?;
        let end = Instant::now();
        let mut done = Vec::with_capacity(frames.len());
        for ((mut frame, roi), probs) in frames.into_iter().zip(rois).zip(maps) {
            frame.stamps.infer_start = Some(start);
            frame.stamps.infer_end = Some(end);
            done.push(self.finish(frame, roi, probs)?);
        }
        Ok(done)
    }

    /// Everything after the model for one frame: mask, statistics, overlay, `--masks`, text.
    fn finish(&mut self, mut frame: Frame, roi: Roi, mut probs: Vec<f32>) -> Result<Processed> {
        let seq = frame.seq;
        let (w, h) = frame.layout.size();
        let stats = self.core.finish(seq, &mut frame.view()?, roi, &mut probs)?;
        let masks = if self.want_masks {
            let mut m = vec![0u8; FrameLayout::packed(w, h, GREY)?.min_len(GREY)?];
            self.core.stage.write_mask(&mut m, w, roi).map_err(|e| PipelineError::Frame { seq, message: e.to_string() })?;
            Some(FrameMask { key: seq, data: Arc::new(m) })
        } else {
            None
        };
        if self.core.cfg.overlay.text {
            let lat = frame.stamps.infer_end.map(|t| t.saturating_duration_since(frame.stamps.capture).as_secs_f64() * 1e3).unwrap_or(0.0);
            let text = format!("{:.1} fps  {lat:.0} ms  lesion {} px", self.interval.fps(), stats.as_ref().map_or(0, |s| s.area_px));
            draw_status_text(&mut frame, &text);
        }
        let now = Instant::now();
        frame.stamps.overlay_done = Some(now);
        self.interval.tick(now);
        // Live: each frame shown has its own mask (the frames the model missed were dropped).
        let mask = (self.core.cfg.mode == Mode::Live).then(|| MaskRecord::own(seq));
        Ok(Processed { frame, masks, stats, mask })
    }
}
