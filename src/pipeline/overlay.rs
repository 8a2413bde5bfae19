//! Per-frame work of the inference thread after capture: ROI, model input, segmenter, temporal
//! smoothing, threshold, largest component, statistics, and the overlay drawn on the
//! full-resolution BGR frame.
//!
//! The mask is computed at model size (threshold, largest component, hole fill) and mapped onto
//! the ROI by pixel-centred nearest scaling ([`MaskScaling`]): statistics, outline, fill and the
//! `--masks` output are those of that scaled mask, computed per model pixel or per outline run,
//! never over the whole frame. Against resizing the probabilities to the ROI first (bilinear)
//! and thresholding there, the boundary moves by less than one model pixel (ROI/model size, about
//! 4 px at 1080p); `mean_probability` averages the model-size map over the lesion's blocks.
//! Buffers live in the [`Processor`], so steady-state frames do not allocate here (the
//! segmenter's output vector aside).

use std::time::Instant;

use rayon::prelude::*;

use super::config::{Mode, OverlayStyle, ProcessConfig, Roi};
use super::error::{PipelineError, Result};
use super::frame::{Frame, FrameLayout, GREY};
use super::inference::{SegmentInput, Segmenter};
use super::latency::LesionStats;
use crate::metrics::Mask;
use crate::postprocess::{largest_component_into, ComponentScratch, MaskScaling};
use crate::preprocess::Preprocessor;

/// A processed frame, by output: the annotated picture for the video output, the full-frame mask
/// for the masks output when there is one, and the lesion for the metadata.
pub struct Processed {
    pub frame: Frame,
    /// `width * height` bytes, 0 or 255.
    pub masks: Option<Vec<u8>>,
    pub stats: Option<LesionStats>,
}

pub struct Processor {
    cfg: ProcessConfig,
    /// The ROI used when the config has none (the phantom's image region).
    default_roi: Option<Roi>,
    /// There is a masks output.
    want_masks: bool,
    /// One per frame of a batch (each caches its resize taps).
    pre: Vec<Preprocessor>,
    /// The batch's model inputs, `3 * model size` values per frame.
    input: Vec<f32>,
    /// Thresholded map and its cleaned-up mask, at model size.
    raw: Mask,
    mask: Mask,
    components: ComponentScratch,
    /// Model size -> ROI size.
    scaling: MaskScaling,
    /// Smoothed probability map at model size, with the frame size it belongs to.
    ema: Option<((usize, usize), Vec<f32>)>,
    warned_roi: bool,
    last_done: Option<Instant>,
    /// Moving average of the time between finished frames (seconds): its inverse is the fps
    /// shown. Averaging the intervals, not their inverses, keeps a batch's burst of frames
    /// (microseconds apart) from showing as hundreds of fps.
    dt_ema: f64,
}

impl Processor {
    pub fn new(cfg: ProcessConfig, default_roi: Option<Roi>, want_masks: bool) -> Processor {
        Processor {
            cfg,
            default_roi,
            want_masks,
            pre: Vec::new(),
            input: Vec::new(),
            raw: Mask::new(0, 0),
            mask: Mask::new(0, 0),
            components: ComponentScratch::default(),
            scaling: MaskScaling::default(),
            ema: None,
            warned_roi: false,
            last_done: None,
            dt_ema: 0.0,
        }
    }

    fn roi_for(&mut self, w: usize, h: usize) -> Result<Roi> {
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

    /// How many queued frames one model run may take: recorded mode's batch, 1 live (where a
    /// batch would only add latency; the newest frame is what matters there).
    pub fn max_batch(&self) -> usize {
        match self.cfg.mode {
            Mode::Recorded => self.cfg.batch.max(1),
            Mode::Live => 1,
        }
    }

    /// Processes frames in order, their model inputs in one [`Segmenter::segment_batch`] call.
    pub fn process_batch(&mut self, frames: Vec<Frame>, seg: &mut dyn Segmenter) -> Result<Vec<Processed>> {
        let (mw, mh) = self.cfg.model_size;
        let len = 3 * mw * mh;
        let rois = frames.iter().map(|f| self.roi_for(f.layout.width, f.layout.height)).collect::<Result<Vec<_>>>()?;
        if self.pre.len() < frames.len() {
            self.pre.resize_with(frames.len(), Preprocessor::new);
        }
        self.input.resize(len * frames.len(), 0.0);
        // Frames of a batch are independent: their crops and resizes run side by side.
        self.input
            .par_chunks_mut(len)
            .zip(self.pre.par_iter_mut())
            .zip(frames.par_iter().zip(&rois))
            .try_for_each(|((out, pre), (f, &roi))| pre.run(&f.data, f.layout.stride, roi, (mw, mh), out))?;
        let start = Instant::now();
        let inputs: Vec<SegmentInput> = frames
            .iter()
            .zip(&rois)
            .zip(self.input.chunks_exact(len))
            .map(|((f, &roi), chw)| SegmentInput { seq: f.seq, pts: f.pts, chw, width: mw, height: mh, roi })
            .collect();
        let maps = seg.segment_batch(&inputs)?;
        drop(inputs);
        let end = Instant::now();
        if maps.len() != frames.len() {
            return Err(PipelineError::Frame {
                seq: frames[0].seq,
                message: format!("the segmenter returned {} maps for {} frames", maps.len(), frames.len()),
            });
        }
        let mut done = Vec::with_capacity(frames.len());
        for ((mut frame, roi), probs) in frames.into_iter().zip(rois).zip(maps) {
            frame.stamps.infer_start = Some(start);
            frame.stamps.infer_end = Some(end);
            done.push(self.finish(frame, roi, probs)?);
        }
        Ok(done)
    }

    /// Everything after the model for one frame: smoothing, mask, statistics, overlay.
    fn finish(&mut self, mut frame: Frame, roi: Roi, mut probs: Vec<f32>) -> Result<Processed> {
        let (w, h) = frame.layout.size();
        let (mw, mh) = self.cfg.model_size;
        if probs.len() != mw * mh {
            return Err(PipelineError::Frame {
                seq: frame.seq,
                message: format!("the segmenter returned {} values for a {mw}x{mh} input", probs.len()),
            });
        }
        self.smooth(&mut probs, (w, h));

        let seq = frame.seq;
        let frame_err = |m: String| PipelineError::Frame { seq, message: m };
        let thr = self.cfg.threshold;
        self.raw.width = mw;
        self.raw.height = mh;
        self.raw.data.clear();
        self.raw.data.extend(probs.iter().map(|&p| p > thr)); // strict, NaN is background
        if self.cfg.largest_component {
            largest_component_into(&self.raw, &mut self.components, &mut self.mask);
        } else {
            std::mem::swap(&mut self.raw, &mut self.mask);
        }
        self.scaling.set_sizes(mw, mh, roi.w, roi.h);
        let stats = self.scaling.stats(&self.mask, &probs).map_err(|e| frame_err(e.to_string()))?.map(|s| LesionStats {
            area_px: s.area_px,
            bbox: [s.bbox.0 + roi.x, s.bbox.1 + roi.y, s.bbox.2, s.bbox.3],
            centroid: [s.centroid.0 + roi.x as f64, s.centroid.1 + roi.y as f64],
            longest_diameter_px: s.longest_diameter_px,
            mean_probability: s.mean_probability,
        });

        let masks = if self.want_masks {
            let mut m = vec![0u8; FrameLayout::packed(w, h, GREY)?.min_len(GREY)?];
            self.scaling.write_mask(&self.mask, &mut m[roi.y * w + roi.x..], w, 255).map_err(|e| frame_err(e.to_string()))?;
            Some(m)
        } else {
            None
        };

        self.draw(&mut frame, roi, stats.as_ref()).map_err(frame_err)?;
        let now = Instant::now();
        frame.stamps.overlay_done = Some(now);
        if let Some(prev) = self.last_done.replace(now) {
            let dt = now.duration_since(prev).as_secs_f64();
            self.dt_ema = if self.dt_ema == 0.0 { dt } else { 0.9 * self.dt_ema + 0.1 * dt };
        }
        Ok(Processed { frame, masks, stats })
    }

    fn smooth(&mut self, probs: &mut [f32], size: (usize, usize)) {
        let a = self.cfg.smooth;
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

    fn draw(&mut self, frame: &mut Frame, roi: Roi, stats: Option<&LesionStats>) -> Result<(), String> {
        let o = &self.cfg.overlay;
        let FrameLayout { width, height, stride } = frame.layout;
        let sub = &mut frame.data[roi.y * stride + roi.x * 3..];
        if matches!(o.style, OverlayStyle::Fill | OverlayStyle::Both) {
            self.scaling.fill_translucent_rgb(sub, stride, &self.mask, o.color_bgr, o.fill_alpha).map_err(|e| e.to_string())?;
        }
        if matches!(o.style, OverlayStyle::Contour | OverlayStyle::Both) {
            self.scaling.draw_contour_rgb(sub, stride, &self.mask, o.color_bgr, o.thickness).map_err(|e| e.to_string())?;
        }
        if o.text {
            let lat = frame.stamps.infer_end.map(|t| t.saturating_duration_since(frame.stamps.capture).as_secs_f64() * 1e3).unwrap_or(0.0);
            let fps = if self.dt_ema > 0.0 { 1.0 / self.dt_ema } else { 0.0 };
            let text = format!("{fps:.1} fps  {lat:.0} ms  lesion {} px", stats.map_or(0, |s| s.area_px));
            crate::raster::draw_text(&mut frame.data, (width, height, stride), (8, 8), 2, &text, [255; 3], Some([0; 3]));
        }
        Ok(())
    }
}
