//! Live, latest-mask: what the display thread does to each frame. Every captured frame is shown,
//! drawn with the newest mask there is; the model runs on the latest-mask worker ([`LatestMask`])
//! and takes a frame only when it is (about to be) free.
//!
//! ```text
//! display thread (nice 0), per frame:                       latest-mask worker (nice 10, own pool)
//!   the worker will be free before the next frame?  --yes-->  model input made (ROI, resize,
//!                                                             /255) and submitted -> Segmenter ->
//!                                                             MaskStage -> the newest mask
//!   the newest mask (fresh or held, its age)        <-------'
//!   drawn on the frame; masks output; text -> Processed { frame, masks, stats, mask }
//! ```
//! The frame's own path never waits on the model: making the model input (about a millisecond)
//! is the only model work on it, and only for the frames the worker will take
//! ([`LatestMask::wants_input`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{ProcessConfig, Roi};
use super::error::{PipelineError, Result};
use super::frame::{AsFrameRef, Frame, FrameLayout, FrameMask, GREY};
use super::inference::Segmenter;
use super::latency::MaskRecord;
use super::latest::{LatestCounters, LatestInput, LatestMask, WorkerOptions};
use super::overlay::{draw_status_text, FrameInterval, FrameProcessor, Processed};

/// The frame interval assumed until two frames have been seen and the source gives none.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(33);

/// What a full-frame mask was made for: the result's id (`None`: no mask yet) and the frame size.
type MaskFor = (Option<u64>, (usize, usize));

/// The display thread's per-frame work (see the module comment).
pub struct Display {
    core: FrameProcessor,
    latest: LatestMask,
    want_masks: bool,
    /// The full-frame mask last made for the masks output: for which result (`None`: no mask
    /// yet) at which frame size, and the mask itself (its key changes with each new one).
    frame_mask: Option<(MaskFor, FrameMask)>,
    next_mask_key: u64,
    /// The time between captures: when the next frame is due, and the frame rate written on
    /// the frame.
    interval: FrameInterval,
}

impl Display {
    /// Starts the latest-mask worker on `segmenter`, with the model's threads (default: one per
    /// core) and priority of `cfg` (`model_threads`, `model_nice`).
    pub fn new(cfg: ProcessConfig, default_roi: Option<Roi>, want_masks: bool, segmenter: Box<dyn Segmenter>) -> Result<Display> {
        // Always a pool of its own: rayon's global pool may already exist (a model timed before
        // the run), its threads at the priority of whoever started it, and the lower priority
        // would then not reach the model's loops.
        let threads = cfg.model_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let options = WorkerOptions { threads: Some(threads), nice: cfg.model_nice };
        let latest = LatestMask::start_with(segmenter, &cfg, options)?;
        Ok(Display {
            core: FrameProcessor::new(cfg, default_roi),
            latest,
            want_masks,
            frame_mask: None,
            next_mask_key: 0,
            interval: FrameInterval::default(),
        })
    }

    /// One frame: its model input when the worker will take it, then the newest mask drawn,
    /// the masks output and the text. `Err(ThreadStopped)` when the worker has stopped
    /// ([`Display::stop`] returns why).
    pub fn show(&mut self, mut frame: Frame) -> Result<Processed> {
        frame.stamps.dequeue.get_or_insert_with(Instant::now);
        let seq = frame.seq;
        let capture = frame.stamps.capture;
        self.interval.tick(capture);
        let (w, h) = frame.layout.size();
        let roi = self.core.roi_for(w, h)?;
        if self.latest.wants_input(self.next_frame_in(&frame)) {
            let mut chw = self.latest.input_buffer();
            self.core.prepare_into(frame.frame_ref()?, roi, &mut chw)?;
            self.latest.submit(LatestInput { seq, pts: frame.pts, frame_size: (w, h), roi, chw, submitted: capture })?;
            frame.stamps.infer_start = Some(Instant::now());
        }
        frame.stamps.draw_start = Some(Instant::now());
        let frame_err = |e: &dyn std::fmt::Display| PipelineError::Frame { seq, message: e.to_string() };
        let mut stats = None;
        let mut mask = None;
        let mut drawn_from = None;
        if let Some(held) = self.latest.for_frame(seq) {
            let r = &held.result;
            mask = Some(MaskRecord {
                from_frame: r.seq,
                fresh: held.fresh,
                age_frames: held.age_frames,
                age_ms: capture.saturating_duration_since(r.submitted).as_secs_f64() * 1e3,
                model_ms: Some(r.done.saturating_duration_since(r.infer_start).as_secs_f64() * 1e3),
            });
            // A mask made for another frame size does not fit this frame: not drawn (the next
            // mask will be of this size).
            if r.frame_size == (w, h) {
                self.core.draw(&mut frame.view()?, r.roi, &r.mask).map_err(|e| frame_err(&e))?;
                stats = r.stats.clone();
                drawn_from = Some(held.result.clone());
            }
        }
        let masks = if self.want_masks { Some(self.frame_mask(drawn_from.as_deref(), (w, h)).map_err(|e| frame_err(&e))?) } else { None };
        if self.core.config().overlay.text {
            let fps = self.interval.fps();
            let text = match &mask {
                Some(m) => format!(
                    "{fps:.1} fps  mask {} fr {:.0} ms  lesion {} px",
                    m.age_frames,
                    m.age_ms,
                    stats.as_ref().map_or(0, |s| s.area_px)
                ),
                None => format!("{fps:.1} fps  no mask yet"),
            };
            draw_status_text(&mut frame, &text);
        }
        frame.stamps.overlay_done = Some(Instant::now());
        Ok(Processed { frame, masks, stats, mask })
    }

    /// When the frame after `frame` is due: the measured interval between captures, else the
    /// frame's duration, else DEFAULT_INTERVAL.
    fn next_frame_in(&self, frame: &Frame) -> Duration {
        if let Some(d) = self.interval.average() {
            return d;
        }
        frame.duration.map(|d| Duration::from_nanos(d.nseconds())).filter(|d| !d.is_zero()).unwrap_or(DEFAULT_INTERVAL)
    }

    /// The full-frame mask of `result` (`None`: an empty one) for a `size` frame, made once per
    /// result and size: the frames that hold a mask share it.
    fn frame_mask(&mut self, result: Option<&super::latest::MaskResult>, size: (usize, usize)) -> Result<FrameMask> {
        let want = (result.map(|r| r.id), size);
        if let Some((made_for, m)) = &self.frame_mask {
            if *made_for == want {
                return Ok(m.clone());
            }
        }
        let (w, h) = size;
        // The previous mask's pixels are reused when no frame in flight still holds them.
        let mut data = self
            .frame_mask
            .take()
            .and_then(|(_, m)| Arc::try_unwrap(m.data).ok())
            .unwrap_or_default();
        data.clear();
        data.resize(FrameLayout::packed(w, h, GREY)?.min_len(GREY)?, 0);
        if let Some(r) = result {
            self.core.write_mask(&r.mask, r.roi, &mut data, w).map_err(|e| PipelineError::Frame { seq: r.seq, message: e.to_string() })?;
        }
        let m = FrameMask { key: self.next_mask_key, data: Arc::new(data) };
        self.next_mask_key += 1;
        self.frame_mask = Some((want, m.clone()));
        Ok(m)
    }

    /// Stops the worker and joins it: its counters, or its error.
    pub fn stop(self) -> Result<LatestCounters> {
        self.latest.stop()
    }
}
