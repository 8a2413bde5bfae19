//! Per-stage timestamps of the frames in flight, and the collector that turns them into counters,
//! percentiles and the per-frame `--metadata` JSON lines.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::error::PipelineError;
use crate::percentile::percentile_sorted;

/// When a frame passed each point of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    /// The appsink callback received it.
    pub capture: Instant,
    pub dequeue: Option<Instant>,
    pub infer_start: Option<Instant>,
    pub infer_end: Option<Instant>,
    /// Live, latest-mask: the frame's drawing began (its model input, when one was made for it,
    /// is done by then; the model itself runs apart, so `infer_*` stay empty).
    pub draw_start: Option<Instant>,
    pub overlay_done: Option<Instant>,
    /// Handed to the output appsrc.
    pub pushed: Option<Instant>,
    /// Reached the output sink (pad probe on the sink's input).
    pub sink: Option<Instant>,
}

impl Stamps {
    pub fn new(capture: Instant) -> Stamps {
        Stamps { capture, dequeue: None, infer_start: None, infer_end: None, draw_start: None, overlay_done: None, pushed: None, sink: None }
    }

    /// Milliseconds per stage; a stage whose stamps are missing is `None`.
    pub fn stages(&self) -> StageTimes {
        let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64() * 1e3),
            _ => None,
        };
        let c = Some(self.capture);
        StageTimes {
            queue: ms(c, self.dequeue),
            preprocess: ms(self.dequeue, self.infer_start),
            inference: ms(self.infer_start, self.infer_end),
            postprocess: ms(self.infer_end.or(self.draw_start), self.overlay_done),
            output_queue: ms(self.overlay_done, self.pushed),
            output: ms(self.pushed, self.sink),
            end_to_end: ms(c, self.sink.or(self.pushed)),
        }
    }
}

/// Per-stage latency of one frame in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StageTimes {
    /// Capture to dequeue by the inference thread (time waiting in the input queue).
    pub queue: Option<f64>,
    /// Crop, resize, channel order, scaling. Latest-mask: only the frames whose model input was
    /// made (the others have none).
    pub preprocess: Option<f64>,
    /// The network alone. Latest-mask: none (the model runs apart: [`MaskRecord::model_ms`]).
    pub inference: Option<f64>,
    /// Resize back, threshold, components, statistics, overlay. Latest-mask: the held mask
    /// drawn (and the masks output and text made).
    pub postprocess: Option<f64>,
    /// Overlay done to pushed into the output appsrc.
    pub output_queue: Option<f64>,
    /// Pushed to the output sink (conversion, appsrc queue).
    pub output: Option<f64>,
    /// Capture to output sink (to the push when the sink stamp is missing).
    pub end_to_end: Option<f64>,
}

pub const STAGE_NAMES: [&str; 7] = ["queue", "preprocess", "inference", "postprocess", "output_queue", "output", "end_to_end"];

impl StageTimes {
    pub fn get(&self, i: usize) -> Option<f64> {
        [self.queue, self.preprocess, self.inference, self.postprocess, self.output_queue, self.output, self.end_to_end][i]
    }
}

/// What the model found in one frame, in full-frame pixel coordinates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LesionStats {
    pub area_px: usize,
    /// `[x, y, w, h]`.
    pub bbox: [usize; 4],
    pub centroid: [f64; 2],
    pub longest_diameter_px: f64,
    pub mean_probability: f64,
}

/// One line of `--metadata`.
#[derive(Clone, Debug, Serialize)]
pub struct FrameRecord {
    pub frame: u64,
    pub pts_ns: Option<u64>,
    pub pts_s: Option<f64>,
    pub lesion: bool,
    #[serde(flatten)]
    pub stats: Option<LesionStats>,
    pub latency_ms: StageTimes,
    /// Seconds since the pipeline started, at capture (for plots over time).
    pub t_s: f64,
    /// Live: the mask the frame was shown with (absent in recorded runs, and in live runs before
    /// the first mask). The lesion fields above are that mask's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskRecord>,
}

/// Live: the mask one frame was shown with, and how old it was.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MaskRecord {
    /// The frame the mask was made from.
    pub from_frame: u64,
    /// The first frame shown with this mask (a held mask: `false`).
    pub fresh: bool,
    /// Frames between the mask's frame and this one (0: its own).
    pub age_frames: u64,
    /// From the capture of the mask's frame to the capture of this one, in ms.
    pub age_ms: f64,
    /// Latest-mask: the model's run that made the mask (network and mask stage), in ms.
    pub model_ms: Option<f64>,
}

impl MaskRecord {
    /// A frame shown with its own mask (live, processed).
    pub fn own(seq: u64) -> MaskRecord {
        MaskRecord { from_frame: seq, fresh: true, age_frames: 0, age_ms: 0.0, model_ms: None }
    }
}

/// Live: the masks the frames were shown with, over the kept records.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MaskSummary {
    /// Age of the mask each frame was shown with, in frames and in ms (frames with a mask).
    pub age_frames: Percentiles,
    pub age_ms: Percentiles,
    /// New masks shown per second: fresh frames over the time from the first to the last.
    pub refresh_fps: f64,
    /// Latest-mask: the model's runs behind the masks shown (network and mask stage), in ms.
    pub model_ms: Percentiles,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    /// Frames received from the input pipeline.
    pub frames_in: u64,
    /// Frames dropped from the live input queue (oldest first).
    pub dropped: u64,
    /// Frames pushed into the output pipeline.
    pub frames_out: u64,
    /// Frames seen at the output sink.
    pub frames_at_sink: u64,
    /// Live: frames whose end-to-end latency exceeded the limit.
    pub late: u64,
    /// Live: frames pushed with a mask no earlier frame had (processed: every frame, its own).
    pub mask_fresh: u64,
    /// Live, latest-mask: frames pushed with the mask the frame before had.
    pub mask_held: u64,
    /// Live: frames pushed before the first mask existed.
    pub mask_none: u64,
    /// Input frames lost before they reached us (an estimate, in frames at the stream's rate):
    /// missing in timestamp gaps (a decoder drops the frames it cannot decode; a damaged
    /// container skips them) and between a file's last frame and its container's duration.
    /// Not before the first frame: where a stream's first frame lies is no evidence (an MPEG-TS
    /// from mpegtsmux starts its video 0.2 s into the stream).
    pub frames_lost: u64,
    /// Timestamp gaps longer than [`GAP_FRAMES`] frame durations between consecutive frames.
    pub timestamp_gaps: u64,
}

/// A gap between two frames' timestamps longer than this many frame durations is counted as
/// frames lost: 1.5 leaves room for timestamps rounded to a container's time base and for a
/// little jitter, and still catches a single missing frame (a gap of 2 durations).
pub const GAP_FRAMES: f64 = 1.5;

/// Frames a span of `span` holds at `frame` per frame, when it is longer than [`GAP_FRAMES`]
/// frames; else 0.
pub fn frames_in_gap(span: gst::ClockTime, frame: gst::ClockTime) -> u64 {
    let (span, frame) = (span.nseconds() as f64, frame.nseconds() as f64);
    if frame <= 0.0 || span <= GAP_FRAMES * frame {
        return 0;
    }
    ((span / frame).round() as u64).max(1)
}

/// Follows the timestamps of the input's frames and counts the frames missing between them.
/// Costs a few comparisons per frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Continuity {
    /// The previous frame's timestamp and its own duration, when it has one.
    last: Option<(gst::ClockTime, Option<gst::ClockTime>)>,
}

/// Frames missing between two frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The timestamps of the frames either side.
    pub from: gst::ClockTime,
    pub to: gst::ClockTime,
    pub frames: u64,
}

impl Continuity {
    /// A frame at `pts` with its buffer's `duration`, in a stream of `frame` per frame (from
    /// its rate, else the buffer's duration). Returns the frames missing since the previous
    /// one, if any. The next frame is expected where the previous one ends by its own
    /// duration when it has one: a longer frame is not a missing one. (Decoders give every
    /// frame the nominal rate's duration: the run passes the container's, from
    /// `source::CodedDurations`.) A timestamp that goes back (a new segment, a stream that
    /// restarts) starts over without counting.
    pub fn frame(
        &mut self,
        pts: Option<gst::ClockTime>,
        duration: Option<gst::ClockTime>,
        frame: Option<gst::ClockTime>,
    ) -> Option<Gap> {
        let pts = pts?;
        let duration = duration.filter(|d| d.nseconds() > 0);
        let (from, last_duration) = self.last.replace((pts, duration))?;
        let frame = frame.filter(|f| f.nseconds() > 0)?;
        // The gap measured in frames of the stream's rate, from the previous frame's end.
        let missing = pts.checked_sub(from)?.checked_sub(last_duration.unwrap_or(frame))?;
        let frames = frames_in_gap(missing + frame, frame).saturating_sub(1);
        (frames > 0).then_some(Gap { from, to: pts, frames })
    }
}

/// Percentiles of one stage in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        // The crate's one percentile (numpy's linear), as every other timing summary reports.
        let at = |p: f64| percentile_sorted(&v, p).unwrap_or(f64::NAN);
        Percentiles { n: v.len(), mean: v.iter().sum::<f64>() / v.len() as f64, p50: at(50.0), p95: at(95.0), p99: at(99.0), max: v[v.len() - 1] }
    }
}

/// End-to-end latency over the first and the last third of a run (by capture time): whether
/// latency grows over a long live run shows as the second drifting above the first. `None` with
/// fewer than three records carrying an end-to-end time.
pub fn end_to_end_thirds(records: &[FrameRecord]) -> Option<(Percentiles, Percentiles)> {
    let timed: Vec<(f64, f64)> = records.iter().filter_map(|r| r.latency_ms.end_to_end.map(|e| (r.t_s, e))).collect();
    if timed.len() < 3 {
        return None;
    }
    let (t0, t1) = timed.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(t, _)| (a.min(t), b.max(t)));
    let third = (t1 - t0) / 3.0;
    let pick = |keep: &dyn Fn(f64) -> bool| Percentiles::of(timed.iter().filter(|(t, _)| keep(*t)).map(|&(_, e)| e).collect());
    Some((pick(&|t| t <= t0 + third), pick(&|t| t >= t1 - third)))
}

/// How many finished records are kept for the percentiles (a long live run keeps the latest).
const KEEP_RECORDS: usize = 200_000;

/// Shared between the inference thread, the pusher thread and the output pad probe.
pub struct Collector {
    start: Instant,
    late_after_ms: f64,
    pending: BTreeMap<u64, FrameRecord>,
    pending_stamps: BTreeMap<u64, Stamps>,
    done: VecDeque<FrameRecord>,
    pub counters: Counters,
    metadata: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// The first write error of the metadata file (later lines are still tried).
    metadata_error: Option<(PathBuf, std::io::Error)>,
}

impl Collector {
    pub fn new(start: Instant, late_after_ms: f64, metadata: Option<(PathBuf, std::fs::File)>) -> Collector {
        Collector {
            start,
            late_after_ms,
            pending: BTreeMap::new(),
            pending_stamps: BTreeMap::new(),
            done: VecDeque::new(),
            counters: Counters::default(),
            metadata: metadata.map(|(p, f)| (p, std::io::BufWriter::new(f))),
            metadata_error: None,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// A frame is about to be pushed to the output; it completes at [`Collector::at_sink`].
    /// `mask`: live, the mask it was drawn with (counted fresh or held).
    pub fn pushed(&mut self, seq: u64, pts: Option<gst::ClockTime>, stats: Option<LesionStats>, stamps: Stamps, mask: Option<MaskRecord>) {
        self.counters.frames_out += 1;
        match mask {
            Some(m) if m.fresh => self.counters.mask_fresh += 1,
            Some(_) => self.counters.mask_held += 1,
            None => {}
        }
        let record = FrameRecord {
            frame: seq,
            pts_ns: pts.map(|p| p.nseconds()),
            pts_s: pts.map(|p| p.nseconds() as f64 / 1e9),
            lesion: stats.is_some(),
            stats,
            latency_ms: StageTimes::default(),
            t_s: stamps.capture.saturating_duration_since(self.start).as_secs_f64(),
            mask,
        };
        self.pending.insert(seq, record);
        self.pending_stamps.insert(seq, stamps);
    }

    /// The output pad probe saw frame `seq`. Frames before it that never arrived are finished
    /// without a sink stamp (an element may drop buffers, e.g. a display sink that is late).
    pub fn at_sink(&mut self, seq: u64, now: Instant) {
        let earlier: Vec<u64> = self.pending.range(..seq).map(|(&k, _)| k).collect();
        for k in earlier {
            self.finish(k, None);
        }
        if self.pending.contains_key(&seq) {
            self.counters.frames_at_sink += 1;
            self.finish(seq, Some(now));
        }
    }

    /// Finishes everything still pending (end of run).
    pub fn flush(&mut self) {
        let keys: Vec<u64> = self.pending.keys().copied().collect();
        for k in keys {
            self.finish(k, None);
        }
        if let Some((path, w)) = &mut self.metadata {
            if let Err(e) = w.flush() {
                self.metadata_error.get_or_insert_with(|| (path.clone(), e));
            }
        }
    }

    fn finish(&mut self, seq: u64, sink: Option<Instant>) {
        let (Some(mut record), Some(mut stamps)) = (self.pending.remove(&seq), self.pending_stamps.remove(&seq)) else { return };
        stamps.sink = sink;
        record.latency_ms = stamps.stages();
        if sink.is_some() && record.latency_ms.end_to_end.is_some_and(|e| e > self.late_after_ms) {
            self.counters.late += 1;
        }
        if let Some((path, w)) = &mut self.metadata {
            let line = serde_json::to_string(&record).unwrap_or_default();
            if let Err(e) = writeln!(w, "{line}") {
                self.metadata_error.get_or_insert_with(|| (path.clone(), e));
            }
        }
        if self.done.len() == KEEP_RECORDS {
            self.done.pop_front();
        }
        self.done.push_back(record);
    }

    pub fn records(&self) -> impl Iterator<Item = &FrameRecord> {
        self.done.iter()
    }

    /// The metadata file's first write error, once.
    pub fn take_metadata_error(&mut self) -> Option<PipelineError> {
        self.metadata_error.take().map(|(path, source)| PipelineError::Metadata { path, source })
    }

    /// The masks the kept records were shown with; `None` when none had one.
    pub fn mask_summary(&self) -> Option<MaskSummary> {
        let masks: Vec<(f64, MaskRecord)> = self.done.iter().filter_map(|r| r.mask.map(|m| (r.t_s, m))).collect();
        if masks.is_empty() {
            return None;
        }
        let fresh: Vec<f64> = masks.iter().filter(|(_, m)| m.fresh).map(|(t, _)| *t).collect();
        let refresh_fps = match (fresh.first(), fresh.last()) {
            (Some(a), Some(b)) if b > a => (fresh.len() - 1) as f64 / (b - a),
            _ => 0.0,
        };
        Some(MaskSummary {
            age_frames: Percentiles::of(masks.iter().map(|(_, m)| m.age_frames as f64).collect()),
            age_ms: Percentiles::of(masks.iter().map(|(_, m)| m.age_ms).collect()),
            refresh_fps,
            model_ms: Percentiles::of(masks.iter().filter(|(_, m)| m.fresh).filter_map(|(_, m)| m.model_ms).collect()),
        })
    }

    /// Percentiles per stage (in [`STAGE_NAMES`] order) over the kept records.
    pub fn summary(&self) -> Vec<(&'static str, Percentiles)> {
        STAGE_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, Percentiles::of(self.done.iter().filter_map(|r| r.latency_ms.get(i)).collect())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_numpys() {
        // numpy.percentile(arange(1, 101), [50, 95, 99]) = [50.5, 95.05, 99.01]
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(p.p50, 50.5) && close(p.p95, 95.05) && close(p.p99, 99.01) && p.max == 100.0, "{p:?}");
        assert_eq!(Percentiles::of(vec![]).n, 0);
    }

    #[test]
    fn thirds_split_by_capture_time() {
        let record = |t_s: f64, e: Option<f64>| FrameRecord {
            frame: 0,
            pts_ns: None,
            pts_s: None,
            lesion: false,
            stats: None,
            latency_ms: StageTimes { end_to_end: e, ..Default::default() },
            t_s,
            mask: None,
        };
        // Latency rising with time: 10 ms at the start, 40 ms at the end; one frame never timed.
        let mut v: Vec<FrameRecord> = (0..=30).map(|i| record(f64::from(i), Some(10.0 + f64::from(i)))).collect();
        v.push(record(31.0, None));
        let (first, last) = end_to_end_thirds(&v).unwrap();
        assert_eq!((first.n, first.max), (11, 20.0));
        assert_eq!((last.n, last.p50 > 30.0, last.max), (11, true, 40.0));
        assert!(end_to_end_thirds(&v[..2]).is_none());
    }

    /// At 25 fps (40 ms a frame): one missing frame is a gap of 80 ms; rounding and jitter up to
    /// half a frame are not.
    #[test]
    fn gaps_count_the_frames_missing_between_timestamps() {
        let ms = gst::ClockTime::from_mseconds;
        let frame = Some(ms(40));
        let mut c = Continuity::default();
        assert_eq!(c.frame(Some(ms(200)), frame, frame), None, "the first frame: nothing to compare with");
        assert_eq!(c.frame(Some(ms(241)), frame, frame), None);
        assert_eq!(c.frame(Some(ms(300)), frame, frame), None, "59 ms: under 1.5 frames");
        assert_eq!(c.frame(Some(ms(380)), None, frame), Some(Gap { from: ms(300), to: ms(380), frames: 1 }));
        assert_eq!(c.frame(Some(ms(460)), None, frame).map(|g| g.frames), Some(1), "no duration: one frame's");
        // The damaged MP4 of issue 12: 1.24 s to 1.76 s is 12 frames missing at 25 fps.
        c.frame(Some(ms(1240)), frame, frame);
        assert_eq!(c.frame(Some(ms(1760)), frame, frame).map(|g| g.frames), Some(12));
        assert_eq!(c.frame(Some(ms(500)), frame, frame), None, "back in time: starts over");
        assert_eq!(c.frame(Some(ms(540)), frame, frame), None);
        assert_eq!(c.frame(None, frame, frame), None);
        assert_eq!(c.frame(Some(ms(900)), None, None), None, "no rate, no estimate");
        // Variable rate: a frame that lasts 120 ms (its buffer says so) is followed 120 ms
        // later; nothing is missing. One that says 40 ms and is followed 120 ms later is.
        let mut c = Continuity::default();
        c.frame(Some(ms(0)), Some(ms(120)), frame);
        assert_eq!(c.frame(Some(ms(120)), frame, frame), None, "a long frame, not a gap");
        assert_eq!(c.frame(Some(ms(240)), frame, frame).map(|g| g.frames), Some(2));
        assert_eq!(frames_in_gap(ms(400), ms(40)), 10);
        assert_eq!(frames_in_gap(ms(60), ms(40)), 0);
    }

    #[test]
    fn frames_skipped_at_the_sink_finish_without_a_stamp() {
        let t = Instant::now();
        let mut c = Collector::new(t, 1e9, None);
        for seq in 0..3 {
            c.pushed(seq, None, None, Stamps::new(t), None);
        }
        c.at_sink(2, Instant::now());
        assert_eq!(c.counters.frames_at_sink, 1);
        assert_eq!(c.records().count(), 3);
        assert!(c.records().next().unwrap().latency_ms.output.is_none());
    }

    /// Fresh and held frames are counted apart; ages and the refresh rate come from the records
    /// (fresh frames 0.1 s apart: 10 masks a second).
    #[test]
    fn mask_counters_and_summary() {
        let t = Instant::now();
        let mut c = Collector::new(t, 1e9, None);
        c.pushed(0, None, None, Stamps::new(t), None);
        for seq in 1..=9u64 {
            let from = seq - (seq - 1) % 3; // frames 1, 4, 7 fresh; each mask held twice
            let capture = t + std::time::Duration::from_millis(seq * 100 / 3);
            let m = MaskRecord { from_frame: from, fresh: from == seq, age_frames: seq - from, age_ms: (seq - from) as f64 * 33.3, model_ms: Some(50.0) };
            c.pushed(seq, None, None, Stamps::new(capture), Some(m));
        }
        c.flush();
        assert_eq!((c.counters.frames_out, c.counters.mask_fresh, c.counters.mask_held), (10, 3, 6));
        let s = c.mask_summary().unwrap();
        assert_eq!((s.age_frames.n, s.age_frames.max, s.model_ms.n), (9, 2.0, 3));
        assert!((s.refresh_fps - 10.0).abs() < 0.01, "{}", s.refresh_fps);
        // JSON: the mask travels in the metadata line; a frame without one has no key.
        let lines: Vec<String> = c.records().map(|r| serde_json::to_string(r).unwrap()).collect();
        assert!(!lines[0].contains("\"mask\""));
        assert!(lines[2].contains("\"mask\":{\"from_frame\":1,\"fresh\":false,\"age_frames\":1"), "{}", lines[2]);
    }
}
