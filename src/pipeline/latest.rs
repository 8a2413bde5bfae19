//! Live video with the latest mask: every frame goes on at the source's rate and is drawn with
//! the newest mask there is, while the model runs on its own thread on the newest frame it can
//! take. Used by the GStreamer element's `mode=latest`, and meant for `lightunet live` ("every
//! frame shown with the latest mask").
//!
//! ```text
//! caller (streaming thread)                          worker thread ("latest mask")
//!   prepare the model input (FrameProcessor)
//!   submit(LatestInput) -> [channel, capacity 1] -> Segmenter -> MaskStage -> MaskResult
//!     a waiting input is replaced (counted)             published as the latest (Arc)
//!   for_frame(seq) -> HeldMask { fresh or held, age } <-'
//!   draw it (overlay::draw_mask)
//! ```
//! Only the model input travels (`3 * 256 * 256` floats, not the frame), in buffers that go back
//! and forth between the two sides ([`LatestMask::input_buffer`]); the worker reuses the mask of
//! a result nobody holds any more. [`LatestMask::stop`] joins the worker and returns its error;
//! [`LatestMask::submit`] says when the worker has stopped.
//!
//! Making the model input costs the caller's thread time on every frame it is made for, so a
//! caller that is short of time asks [`LatestMask::wants_input`] first: yes when the worker is
//! idle, or will be before the next frame comes (it publishes when it started and how long its
//! runs take), so that the input is waiting the moment the worker is free and is not made for
//! frames the worker will never take. [`WorkerOptions`] give the worker a rayon pool of its own
//! (the model's loops then never queue behind the caller's, nor the caller's behind the model's)
//! and a lower priority ([`super::priority`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use super::config::{ProcessConfig, Roi};
use super::error::{PipelineError, Result};
use super::inference::{SegmentInput, Segmenter};
use super::latency::LesionStats;
use super::overlay::MaskStage;
use super::priority::lower_this_thread;
use crate::metrics::Mask;

const THREAD: &str = "latest mask";

/// One frame's model input, handed to the worker.
pub struct LatestInput {
    /// The frame's number in the caller's stream (mask ages are counted in these).
    pub seq: u64,
    pub pts: Option<gst::ClockTime>,
    /// The frame's size and the part of it the model sees.
    pub frame_size: (usize, usize),
    pub roi: Roi,
    /// `[3, h, w]` at the model size, B G R planes, 0..1 (`FrameProcessor::prepare_into`), in a
    /// buffer from [`LatestMask::input_buffer`].
    pub chw: Vec<f32>,
    /// When the frame was captured (or submitted, for a caller without a capture time): a
    /// mask's age and latency count from here.
    pub submitted: Instant,
}

/// The mask the worker made for one frame.
#[derive(Debug)]
pub struct MaskResult {
    /// Counts the worker's results from 0.
    pub id: u64,
    /// The frame it was made from.
    pub seq: u64,
    pub pts: Option<gst::ClockTime>,
    pub frame_size: (usize, usize),
    pub roi: Roi,
    /// At model size; maps onto `roi` by pixel-centred nearest scaling.
    pub mask: Mask,
    /// In frame pixels; `None`: no lesion.
    pub stats: Option<LesionStats>,
    pub submitted: Instant,
    pub infer_start: Instant,
    pub done: Instant,
}

impl MaskResult {
    /// From submission to the finished mask (waiting for the worker included).
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.submitted)
    }
}

/// The mask a frame is drawn with.
#[derive(Debug, Clone)]
pub struct HeldMask {
    pub result: Arc<MaskResult>,
    /// The first frame to get this mask.
    pub fresh: bool,
    /// Frames between the mask's own frame and this one.
    pub age_frames: u64,
    /// Time since the mask's own frame was submitted.
    pub age: Duration,
}

/// What happened to the submitted frames and to the frames that asked for a mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatestCounters {
    pub submitted: u64,
    /// Inputs replaced by a newer one before the worker took them.
    pub replaced: u64,
    /// Masks the worker made.
    pub inferred: u64,
    /// Frames that got a mask no earlier frame got.
    pub fresh: u64,
    /// Frames that got the same mask as the frame before.
    pub held: u64,
    /// Frames that asked before the first mask was there.
    pub without_mask: u64,
}

/// How the worker runs beside the caller's threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Threads of a rayon pool of the worker's own, where the model's parallel loops run;
    /// `None`: rayon's global pool (shared with everyone else in the process).
    pub threads: Option<usize>,
    /// Nice value for the worker and its pool (0: the caller's; only ever raised, see
    /// [`super::priority`]).
    pub nice: i32,
}

/// What the worker is doing, for [`LatestMask::wants_input`].
#[derive(Clone, Copy, Debug, Default)]
struct Phase {
    /// When it took the input it is running (`None`: waiting for one).
    running_since: Option<Instant>,
    /// Moving average of its runs (model and mask), from taking an input to publishing.
    typical: Option<Duration>,
}

struct Shared {
    latest: Mutex<Option<Arc<MaskResult>>>,
    phase: Mutex<Phase>,
    stop: AtomicBool,
}

struct Local {
    counters: LatestCounters,
    last_given: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The latest-mask worker and the caller's side of it.
pub struct LatestMask {
    tx: Sender<LatestInput>,
    /// The caller's handle on the same channel: takes a waiting input back to replace it.
    rx: Receiver<LatestInput>,
    buffers: (Sender<Vec<f32>>, Receiver<Vec<f32>>),
    input_len: usize,
    shared: Arc<Shared>,
    local: Mutex<Local>,
    handle: Option<JoinHandle<Result<u64>>>,
}

impl LatestMask {
    /// Starts the worker with the segmenter and the mask settings of `cfg` (threshold, smoothing,
    /// clean-up, model size), on rayon's global pool at the caller's priority.
    pub fn start(segmenter: Box<dyn Segmenter>, cfg: &ProcessConfig) -> Result<LatestMask> {
        Self::start_with(segmenter, cfg, WorkerOptions::default())
    }

    /// [`LatestMask::start`] with a pool of the worker's own and a priority ([`WorkerOptions`]).
    pub fn start_with(segmenter: Box<dyn Segmenter>, cfg: &ProcessConfig, options: WorkerOptions) -> Result<LatestMask> {
        if options.threads == Some(0) {
            return Err(PipelineError::Config("the model needs at least 1 thread".into()));
        }
        let (tx, rx) = bounded::<LatestInput>(1);
        // Inputs in flight: one waiting, one in the worker, one being filled.
        let buffers = bounded::<Vec<f32>>(3);
        let shared = Arc::new(Shared { latest: Mutex::new(None), phase: Mutex::new(Phase::default()), stop: AtomicBool::new(false) });
        let worker = Worker {
            rx: rx.clone(),
            recycle: buffers.0.clone(),
            shared: shared.clone(),
            stage: MaskStage::new(cfg),
            segmenter,
            model_size: cfg.model_size,
        };
        let handle = std::thread::Builder::new()
            .name(THREAD.into())
            .spawn(move || worker.run_with(options))
            .map_err(|source| PipelineError::ThreadSpawn { thread: THREAD, source })?;
        Ok(LatestMask {
            tx,
            rx,
            buffers,
            input_len: 3 * cfg.model_size.0 * cfg.model_size.1,
            shared,
            local: Mutex::new(Local { counters: LatestCounters::default(), last_given: None }),
            handle: Some(handle),
        })
    }

    /// A buffer of the model input's length for the next [`LatestInput::chw`]: one the worker
    /// has finished with when there is one (no allocation in the steady state).
    pub fn input_buffer(&self) -> Vec<f32> {
        let mut v = self.buffers.1.try_recv().unwrap_or_default();
        v.resize(self.input_len, 0.0);
        v
    }

    /// Hands a frame's input to the worker without waiting: an input still waiting is replaced
    /// (and counted). `Err(ThreadStopped)` once the worker has ended; [`LatestMask::stop`] then
    /// returns why.
    pub fn submit(&self, input: LatestInput) -> Result<()> {
        if self.handle.as_ref().is_none_or(JoinHandle::is_finished) {
            return Err(PipelineError::ThreadStopped { thread: THREAD });
        }
        if input.chw.len() != self.input_len {
            return Err(PipelineError::Frame {
                seq: input.seq,
                message: format!("model input of {} values, expected {}", input.chw.len(), self.input_len),
            });
        }
        let mut local = lock(&self.local);
        local.counters.submitted += 1;
        let mut input = input;
        // One producer: after taking the waiting input back there is room, unless the worker
        // took it first, in which case there is room too. Two tries are enough.
        for _ in 0..2 {
            match self.tx.try_send(input) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    input = back;
                    if let Ok(old) = self.rx.try_recv() {
                        local.counters.replaced += 1;
                        let _ = self.buffers.0.try_send(old.chw);
                    }
                }
                Err(TrySendError::Disconnected(_)) => return Err(PipelineError::ThreadStopped { thread: THREAD }),
            }
        }
        // Only a second producer could fill the slot again: count this input as replaced.
        local.counters.replaced += 1;
        Ok(())
    }

    /// Whether a frame's input made now is one the worker will take: it is idle, or it is
    /// expected to finish within `next_frame_in` (when the next frame is due), so that the input
    /// is there the moment it is free. An input already waiting is only worth replacing while the
    /// worker is still expected to finish before the next frame (then the newer frame goes in
    /// its place); once the worker runs over its usual time, the waiting one stays. Until a
    /// first run has been timed, one input may wait ahead. Also `true` once the worker has
    /// stopped, so that [`LatestMask::submit`] reports it.
    pub fn wants_input(&self, next_frame_in: Duration) -> bool {
        if self.handle.as_ref().is_none_or(JoinHandle::is_finished) {
            return true;
        }
        let waiting = !self.rx.is_empty();
        let phase = *lock(&self.shared.phase);
        let Some(since) = phase.running_since else { return true };
        let Some(typical) = phase.typical else { return !waiting };
        let done = since + typical;
        let now = Instant::now();
        let soon = done <= now + next_frame_in;
        if waiting {
            soon && done > now
        } else {
            soon
        }
    }

    /// The worker is running the model (not waiting for an input).
    pub fn busy(&self) -> bool {
        lock(&self.shared.phase).running_since.is_some()
    }

    /// The moving average of the worker's runs (model and mask), once it has run.
    pub fn typical_run(&self) -> Option<Duration> {
        lock(&self.shared.phase).typical
    }

    /// The worker has ended (an error or a panic: [`LatestMask::stop`] returns it).
    pub fn stopped(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The newest mask, if any.
    pub fn latest(&self) -> Option<Arc<MaskResult>> {
        lock(&self.shared.latest).clone()
    }

    /// The mask frame `seq` is drawn with (the newest), counted as fresh or held.
    pub fn for_frame(&self, seq: u64) -> Option<HeldMask> {
        let latest = self.latest();
        let mut local = lock(&self.local);
        let Some(result) = latest else {
            local.counters.without_mask += 1;
            return None;
        };
        let fresh = local.last_given != Some(result.id);
        if fresh {
            local.counters.fresh += 1;
            local.last_given = Some(result.id);
        } else {
            local.counters.held += 1;
        }
        Some(HeldMask { fresh, age_frames: seq.saturating_sub(result.seq), age: result.submitted.elapsed(), result })
    }

    pub fn counters(&self) -> LatestCounters {
        let mut c = lock(&self.local).counters;
        c.inferred = self.latest().map_or(0, |r| r.id + 1);
        c
    }

    /// Stops the worker (an input still waiting is dropped), joins it, and returns the counters
    /// or the worker's error.
    pub fn stop(mut self) -> Result<LatestCounters> {
        self.shutdown()?;
        Ok(self.counters())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some(handle) = self.handle.take() else { return Ok(()) };
        match handle.join() {
            Ok(r) => r.map(|_| ()),
            Err(payload) => Err(PipelineError::panicked(THREAD, payload.as_ref())),
        }
    }
}

impl Drop for LatestMask {
    /// Without [`LatestMask::stop`] the worker is still joined; its error is logged.
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("{e}");
        }
    }
}

struct Worker {
    rx: Receiver<LatestInput>,
    recycle: Sender<Vec<f32>>,
    shared: Arc<Shared>,
    stage: MaskStage,
    segmenter: Box<dyn Segmenter>,
    model_size: (usize, usize),
}

/// Weight of the newest run in [`Phase::typical`]: a few runs follow a change of speed (another
/// program taking the cores) without one slow run throwing the estimate.
const TYPICAL_WEIGHT: f64 = 0.25;

impl Worker {
    /// Lowers the thread's priority, starts the pool, and runs in it.
    fn run_with(self, options: WorkerOptions) -> Result<u64> {
        let nice = options.nice;
        if nice > 0 {
            if let Err(e) = lower_this_thread(nice) {
                tracing::warn!("latest mask: cannot lower the model's priority to nice {nice}: {e}");
            }
        }
        let Some(threads) = options.threads else { return self.run() };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lightunet-model-{i}"))
            // Threads inherit the nice value of the thread that starts them (this one); set it
            // all the same, so that the pool does not depend on who builds it.
            .start_handler(move |_| {
                if nice > 0 {
                    let _ = lower_this_thread(nice);
                }
            })
            .build()
            .map_err(|e| PipelineError::ThreadSpawn { thread: "model pool", source: std::io::Error::other(e) })?;
        pool.install(|| self.run())
    }

    /// Runs until stopped; returns the number of masks made, or the first error.
    fn run(mut self) -> Result<u64> {
        let mut next_id = 0u64;
        // The result replaced last time: its mask buffer is reused once no frame holds it.
        let mut spare: Option<Arc<MaskResult>> = None;
        while !self.shared.stop.load(Ordering::SeqCst) {
            let input = match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(i) => i,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let (mw, mh) = self.model_size;
            let infer_start = Instant::now();
            lock(&self.shared.phase).running_since = Some(infer_start);
            let seg_input = SegmentInput { seq: input.seq, pts: input.pts, chw: &input.chw, width: mw, height: mh, roi: input.roi };
            let mut probs = self.segmenter.segment(&seg_input)?;
            let stats = self.stage.run(input.seq, &mut probs, input.frame_size, input.roi)?;
            let mut mask = spare.take().and_then(|r| Arc::try_unwrap(r).ok()).map_or_else(|| Mask::new(0, 0), |r| r.mask);
            let made = self.stage.mask();
            mask.width = made.width;
            mask.height = made.height;
            mask.data.clear();
            mask.data.extend_from_slice(&made.data);
            let result = MaskResult {
                id: next_id,
                seq: input.seq,
                pts: input.pts,
                frame_size: input.frame_size,
                roi: input.roi,
                mask,
                stats,
                submitted: input.submitted,
                infer_start,
                done: Instant::now(),
            };
            next_id += 1;
            let took = result.done.saturating_duration_since(infer_start);
            spare = lock(&self.shared.latest).replace(Arc::new(result));
            {
                let mut phase = lock(&self.shared.phase);
                phase.running_since = None;
                phase.typical = Some(match phase.typical {
                    Some(t) => t.mul_f64(1.0 - TYPICAL_WEIGHT) + took.mul_f64(TYPICAL_WEIGHT),
                    None => took,
                });
            }
            let _ = self.recycle.try_send(input.chw);
        }
        Ok(next_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(side: usize) -> ProcessConfig {
        ProcessConfig { model_size: (side, side), ..Default::default() }
    }

    fn input(m: &LatestMask, seq: u64, value: f32) -> LatestInput {
        let mut chw = m.input_buffer();
        chw.fill(value);
        LatestInput { seq, pts: None, frame_size: (64, 48), roi: Roi::full(64, 48), chw, submitted: Instant::now() }
    }

    /// A slow segmenter fed faster than it runs: inputs are replaced, never queued; every mask is
    /// the newest frame's at the time; the counters add up; stop joins cleanly.
    #[test]
    fn newest_frame_wins_and_counters_add_up() {
        // The map is the input's first value everywhere: frame k is lesion iff k is even.
        let seg = |i: &SegmentInput| -> Result<Vec<f32>> {
            std::thread::sleep(Duration::from_millis(20));
            Ok(vec![i.chw[0]; i.width * i.height])
        };
        let m = LatestMask::start(Box::new(seg), &cfg(16)).unwrap();
        let frames = 60u64;
        let (mut seen, mut last_id) = (Vec::new(), None);
        for k in 0..frames {
            m.submit(input(&m, k, if k % 2 == 0 { 0.9 } else { 0.1 })).unwrap();
            if let Some(h) = m.for_frame(k) {
                assert!(h.result.seq <= k && h.age_frames == k - h.result.seq);
                assert_eq!(h.fresh, last_id != Some(h.result.id));
                last_id = Some(h.result.id);
                // The mask belongs to its own frame.
                assert_eq!(h.result.stats.is_some(), h.result.seq % 2 == 0, "frame {}", h.result.seq);
                seen.push(h.result.seq);
            }
            std::thread::sleep(Duration::from_millis(4));
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "masks go back in time: {seen:?}");
        let c = m.stop().unwrap();
        assert_eq!(c.submitted, frames);
        assert_eq!(c.fresh + c.held + c.without_mask, frames);
        assert!(c.replaced > 0 && c.inferred > 1 && c.inferred < frames, "{c:?}");
        assert!(c.held > 0, "{c:?}");
    }

    /// The worker says when an input is worth making: idle; busy but due before the next frame;
    /// not when it will still be busy then, nor (with one waiting) once it runs late.
    #[test]
    fn wants_input_follows_the_worker() {
        let (go_tx, go_rx) = bounded::<()>(0);
        let seg = move |i: &SegmentInput| -> Result<Vec<f32>> {
            // Held until the test says go: the test decides how long each run takes.
            let _ = go_rx.recv();
            Ok(vec![0.0; i.width * i.height])
        };
        let m = LatestMask::start(Box::new(seg), &cfg(16)).unwrap();
        let wait_until = |what: &str, f: &dyn Fn() -> bool| {
            let t = Instant::now();
            while !f() {
                assert!(t.elapsed() < Duration::from_secs(20), "never: {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        assert!(m.wants_input(Duration::ZERO), "idle");
        m.submit(input(&m, 0, 0.0)).unwrap();
        wait_until("busy with frame 0", &|| m.busy());
        // No run timed yet: one input may wait ahead, not two.
        assert!(m.wants_input(Duration::ZERO));
        m.submit(input(&m, 1, 0.0)).unwrap();
        assert!(!m.wants_input(Duration::from_secs(100)));
        // Frame 0 takes about 400 ms; the worker goes straight on to frame 1.
        std::thread::sleep(Duration::from_millis(400));
        go_tx.send(()).unwrap();
        wait_until("frame 0 published", &|| m.latest().is_some());
        wait_until("busy with frame 1", &|| m.busy());
        let typical = m.typical_run().unwrap();
        assert!(typical >= Duration::from_millis(400), "{typical:?}");
        assert!(!m.wants_input(Duration::from_millis(10)), "busy for about 400 ms more");
        assert!(m.wants_input(Duration::from_secs(5)), "done before the next frame");
        m.submit(input(&m, 2, 0.0)).unwrap();
        // One waiting and the worker due before the next frame: a newer frame may replace it.
        assert!(m.wants_input(Duration::from_secs(5)));
        // Once the worker runs over its usual time the waiting input stays.
        std::thread::sleep(typical + Duration::from_millis(100));
        assert!(!m.wants_input(Duration::from_secs(5)), "late: keep the waiting input");
        go_tx.send(()).unwrap();
        wait_until("frame 1 published", &|| m.latest().is_some_and(|r| r.seq == 1));
        go_tx.send(()).unwrap();
        wait_until("idle", &|| !m.busy() && m.latest().is_some_and(|r| r.seq == 2));
        assert!(m.wants_input(Duration::ZERO));
        let c = m.stop().unwrap();
        assert_eq!((c.submitted, c.replaced, c.inferred), (3, 0, 3));
    }

    /// With its own pool the model's loops run on that pool's threads, at the nice value asked
    /// for; the caller's thread keeps its own.
    #[test]
    fn the_worker_runs_on_its_own_pool_and_priority() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let seg = move |i: &SegmentInput| -> Result<Vec<f32>> {
            let name = std::thread::current().name().map(str::to_string);
            *lock(&s) = Some((rayon::current_num_threads(), name, super::super::priority::this_thread_nice()));
            Ok(vec![0.0; i.width * i.height])
        };
        let before = super::super::priority::this_thread_nice();
        let nice = before.map_or(5, |n| (n + 5).min(19));
        let m = LatestMask::start_with(Box::new(seg), &cfg(16), WorkerOptions { threads: Some(1), nice }).unwrap();
        m.submit(input(&m, 0, 0.0)).unwrap();
        let t = Instant::now();
        while m.latest().is_none() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        m.stop().unwrap();
        let (threads, name, got) = lock(&seen).clone().expect("the segmenter ran");
        assert_eq!(threads, 1);
        assert_eq!(name.as_deref(), Some("lightunet-model-0"));
        if cfg!(target_os = "linux") {
            assert_eq!(got, Some(nice));
        }
        assert_eq!(super::super::priority::this_thread_nice(), before);
        assert!(matches!(
            LatestMask::start_with(Box::new(|_: &SegmentInput| Ok(vec![])), &cfg(16), WorkerOptions { threads: Some(0), nice: 0 }),
            Err(PipelineError::Config(_))
        ));
    }

    /// The worker's error comes back from stop(); submit says the worker stopped.
    #[test]
    fn worker_error_surfaces() {
        let mut calls = 0;
        let seg = move |i: &SegmentInput| -> Result<Vec<f32>> {
            calls += 1;
            if calls > 2 {
                return Err(PipelineError::Frame { seq: i.seq, message: "model failed".into() });
            }
            Ok(vec![0.0; i.width * i.height])
        };
        let m = LatestMask::start(Box::new(seg), &cfg(16)).unwrap();
        let mut stopped = false;
        for k in 0..200 {
            if let Err(e) = m.submit(input(&m, k, 0.0)) {
                assert!(matches!(e, PipelineError::ThreadStopped { .. }), "{e}");
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stopped, "the worker never stopped");
        let e = m.stop().unwrap_err().to_string();
        assert!(e.contains("model failed"), "{e}");
    }

    /// A wrong-sized input is refused before it reaches the worker; a segmenter that returns a
    /// map of the wrong size stops the worker with a frame error.
    #[test]
    fn sizes_are_checked() {
        let seg = |_: &SegmentInput| -> Result<Vec<f32>> { Ok(vec![0.0; 3]) };
        let m = LatestMask::start(Box::new(seg), &cfg(16)).unwrap();
        let mut bad = input(&m, 0, 0.0);
        bad.chw.pop();
        assert!(matches!(m.submit(bad), Err(PipelineError::Frame { .. })));
        m.submit(input(&m, 1, 0.0)).unwrap();
        let t = Instant::now();
        while m.submit(input(&m, 2, 0.0)).is_ok() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.stop().unwrap_err().to_string().contains("returned 3 values"));
    }
}
