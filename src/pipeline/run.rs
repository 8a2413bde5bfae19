//! The run loop: starts the input and output pipelines and the two worker threads, watches both
//! buses, and shuts everything down in order (EOS first, so files are always finalised).
//!
//! ```text
//! input pipeline -> appsink callback -> [queue: capacity N] -> inference thread (Processor)
//!     -> [queue: 2] -> pusher thread -> appsrc -> output pipelines (video, masks, recording)
//! ```
//! What the callback, the threads and the bus watch share is one `RunContext`.
//! Recorded mode: the appsink callback blocks on a full queue (every frame is processed, in order).
//! Live mode: it never blocks; on a full queue the oldest frame is dropped and counted. Live with
//! [`Show::LatestMask`] (the default) puts the display thread ([`Display`]) where the inference
//! and pusher threads are: every frame is drawn with the newest mask and pushed at once, while
//! the model runs on the latest-mask worker (its own pool, niced) on the newest frame it can take:
//! ```text
//! appsink callback -> [queue] -> display thread (model input when the worker is free; newest
//!     mask drawn; pushed) -> outputs
//!                        '-> latest-mask worker (model, mask) -> the newest mask -'
//! ```
//! One thread from the queue to the outputs: on a loaded 2-core machine each hand-over between
//! threads cost a frame up to several ms at p99 (measured: 7 ms between display and pusher).
//! A live recording (`record`) is an output of its own whose failure ends the recording, not the
//! run (see [`super::sink::Recording`]).
//! Shutdown: EOS (end of input, Ctrl-C, `max_frames`, a stalled live source) closes the input
//! queue; the inference thread drains it and closes its queue; the pusher sends EOS into the
//! outputs; the run ends when every output has posted EOS. An error aborts: outputs go to `Null`
//! first, which unblocks the pusher, whose exit unblocks the inference thread, and so on upstream.
//! File outputs (and `--metadata`) are written under temporary names ([`crate::output`]) and moved
//! into place only after every output has posted EOS and gone to `Null`; a failed run removes them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use gst::prelude::*;
use serde::Serialize;

use super::config::{Mode, ProcessConfig, Roi, Show, SinkSpec, SourceSpec};
use super::display::Display;
use super::error::{panic_message, PipelineError, Result};
use super::inference::Segmenter;
use super::frame::Frame;
use super::latency::{frames_in_gap, Collector, Continuity, Counters, FrameRecord, MaskSummary, Percentiles, Stamps};
use super::latest::LatestCounters;
use super::overlay::{Processed, Processor};
use super::sink::{check_recording, Outputs, RecordingHandle, RecordingReport};
use super::source::{build_input, capture_bgr, has_demuxer, init, silent_demuxer, Captured, CodedDurations};
use crate::output::{OutputPlan, PendingFile, Staged};

/// One run of the pipeline.
pub struct Job {
    pub source: SourceSpec,
    pub output: SinkSpec,
    /// Raw masks (0/255 grey) as a second output.
    pub masks: Option<SinkSpec>,
    /// Live: the annotated frames recorded to this file (`.mkv`, `.mp4`) as they are shown,
    /// under its own name from the first frame (a crash leaves it playable up to then).
    pub record: Option<PathBuf>,
    /// Per-frame JSON lines.
    pub metadata: Option<PathBuf>,
    /// Replace existing output files (metadata included).
    pub overwrite: bool,
    pub config: ProcessConfig,
    /// Stop after this many input frames (EOS is sent; outputs are finalised).
    pub max_frames: Option<u64>,
    /// Set from outside (Ctrl-C): EOS is sent to the input, frames in flight finish, outputs
    /// are finalised.
    pub stop: Arc<AtomicBool>,
    /// Return every frame's record in the report (for plots).
    pub keep_records: bool,
}

impl Job {
    pub fn new(source: SourceSpec, output: SinkSpec) -> Job {
        Job {
            source,
            output,
            masks: None,
            record: None,
            metadata: None,
            overwrite: false,
            config: ProcessConfig::default(),
            max_frames: None,
            stop: Arc::new(AtomicBool::new(false)),
            keep_records: false,
        }
    }

    /// The run's input and outputs, with their roles, for [`OutputPlan::check`]; a caller with
    /// outputs of its own (a report) adds them before checking.
    pub fn output_plan(&self) -> Result<OutputPlan> {
        let mut plan = OutputPlan::new();
        if let SourceSpec::File(p) = &self.source {
            plan.input("input", p);
        }
        self.output.plan(&mut plan, "video output")?;
        if let Some(m) = &self.masks {
            m.plan(&mut plan, "masks output")?;
        }
        if let Some(r) = &self.record {
            if self.config.mode != Mode::Live {
                return Err(PipelineError::Config("a recording (--record) is for live runs; `process` writes its output file".into()));
            }
            check_recording(r)?;
            plan.file("recording", r, self.overwrite);
        }
        if let Some(m) = &self.metadata {
            plan.file("metadata output", m, self.overwrite);
        }
        Ok(plan)
    }
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    /// Live: `latest-mask` (every frame, the newest mask) or `processed`.
    pub show: Option<&'static str>,
    /// The most frames one model run took (recorded mode runs the frames waiting in the queue
    /// together, up to its `batch`; their inference stage is that whole run).
    pub batch: usize,
    pub counters: Counters,
    /// Seconds from start to the last output's EOS.
    pub wall_s: f64,
    /// Frames pushed to the output per second of wall time (first frame to last push).
    pub fps_out: f64,
    pub latency_ms: Vec<(&'static str, Percentiles)>,
    /// Resident memory of the process at the start and the end of the run (Linux; MiB).
    pub rss_mb: (Option<f64>, Option<f64>),
    /// The most resident memory the process has held up to the end of the run (Linux `VmHWM`;
    /// MiB): the end figure hides the peak (an 8K clip peaked at 4.8 GB and ended at 559 MiB).
    pub peak_rss_mb: Option<f64>,
    /// The input failed part-way (what decoded was processed and the outputs finalised).
    pub input_error: Option<String>,
    /// The run was stopped from outside (Ctrl-C) or by a stalled live source.
    pub stopped: Option<String>,
    /// Live: the masks the frames were shown with (age, refresh rate, the model's runs).
    pub masks: Option<MaskSummary>,
    /// Live, latest-mask: the worker's counters (inputs submitted and replaced, masks made).
    pub latest: Option<LatestCounters>,
    /// Live: the recording, when there was one.
    pub recording: Option<RecordingReport>,
    #[serde(skip)]
    pub records: Vec<FrameRecord>,
}

/// What the appsink callback, the two worker threads and the bus watch share.
struct RunContext {
    mode: Mode,
    /// Stop after this many input frames.
    max_frames: Option<u64>,
    /// The input queue's sender. Taking it closes the queue (end of input, `max_frames`, a stop):
    /// the inference thread drains what is left and ends.
    sender: Mutex<Option<Sender<Frame>>>,
    last_frame: Mutex<Option<LastFrame>>,
    /// Counters and stamps; the video output's pad probe holds it too.
    collector: Arc<Mutex<Collector>>,
    /// The run failed: the inference thread stops without draining its queue.
    abort: AtomicBool,
    /// A frame went into the outputs (an output that never got one will post no EOS).
    pushed_any: AtomicBool,
    /// The inference thread has ended (however): the appsink callback must not wait for room
    /// in its queue any more (recorded mode would block the streaming thread for ever, and
    /// with it the input's shutdown).
    consumer_gone: AtomicBool,
    /// The appsink callback panicked: the run ends with this error.
    callback_error: Mutex<Option<PipelineError>>,
}

/// What the thread that takes the frames (inference or display) returns.
#[derive(Default)]
struct FramesDone {
    /// The largest batch the model ran (1 in live mode).
    largest_batch: usize,
    /// Latest-mask: the worker's counters.
    latest: Option<LatestCounters>,
    /// The display thread, which pushes: when it pushed the last frame.
    last_push: Option<Instant>,
}

/// The worker threads. Each returns its error at join.
struct Workers {
    /// The inference thread, or the display thread (live, latest-mask).
    inference: JoinHandle<Result<FramesDone>>,
    /// Its name, for errors.
    frames_thread: &'static str,
    /// Returns when it pushed the last frame. `None`: the display thread pushes itself.
    pusher: Option<JoinHandle<Result<Option<Instant>>>>,
}

impl Workers {
    /// The thread that pushes into the outputs has ended (and sent them EOS, unless it failed).
    fn pushing_done(&self) -> bool {
        self.pusher.as_ref().map_or_else(|| self.inference.is_finished(), JoinHandle::is_finished)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of counters; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` to the end with `segmenter` as the inference step, and moves its file outputs
/// into place.
pub fn run(job: Job, segmenter: Box<dyn Segmenter>) -> Result<Report> {
    let (report, staged) = run_staged(job, segmenter)?;
    staged.commit()?;
    Ok(report)
}

/// [`run`], leaving the file outputs (video, masks, metadata) under their temporary names for
/// the caller to commit with outputs of its own (a report), or to drop. The job's outputs are
/// checked first ([`Job::output_plan`]). When no frame reached the outputs nothing is staged.
pub fn run_staged(job: Job, segmenter: Box<dyn Segmenter>) -> Result<(Report, Staged)> {
    job.config.validate()?;
    if job.max_frames == Some(0) {
        return Err(PipelineError::Config("--frames must be at least 1 (0 frames would write nothing)".into()));
    }
    job.output_plan()?.check()?;
    let metadata_file = job.metadata.as_ref().map(|p| PendingFile::create("metadata output", p, job.overwrite)).transpose()?;
    let metadata = match (&job.metadata, &metadata_file) {
        (Some(p), Some(f)) => Some((p.clone(), f.handle()?)),
        _ => None,
    };
    init()?;
    let mode = job.config.mode;
    let live = mode == Mode::Live;
    let start = Instant::now();
    let rss_start = rss_mb();
    // Lateness is a live-mode notion: recorded mode waits for every frame by design.
    let late_ms = if live { job.config.late_after.as_secs_f64() * 1e3 } else { f64::INFINITY };
    let collector = Arc::new(Mutex::new(Collector::new(start, late_ms, metadata)));

    let input = build_input(&job.source, live)?;
    let mut outputs = Outputs::build(&job.output, job.masks.as_ref(), mode, Some(collector.clone()))?;
    let recording = match &job.record {
        Some(p) => Some(outputs.add_recording(p, job.overwrite, job.config.model_nice)?),
        None => None,
    };
    let mut staged = outputs.take_staged();
    if let Some(f) = metadata_file {
        staged.push(f);
    }
    let default_roi = input.phantom.as_ref().map(|p| {
        let (x, y, w, h) = p.image_rect();
        Roi { x, y, w, h }
    });

    // A recorded batch can only take frames that are waiting: the queue holds at least one batch.
    let capacity = if live { job.config.queue_capacity } else { job.config.queue_capacity.max(job.config.batch) };
    let (in_tx, in_rx) = bounded::<Frame>(capacity);
    let ctx = Arc::new(RunContext {
        mode,
        max_frames: job.max_frames,
        sender: Mutex::new(Some(in_tx)),
        last_frame: Mutex::new(None),
        collector,
        abort: AtomicBool::new(false),
        pushed_any: AtomicBool::new(false),
        consumer_gone: AtomicBool::new(false),
        callback_error: Mutex::new(None),
    });

    install_appsink_callbacks(&input.appsink, ctx.clone(), in_rx.clone(), input.coded.clone());

    let want_masks = outputs.masks.is_some();
    let out_buses: Vec<gst::Bus> = outputs.required().filter_map(|o| o.pipeline.bus()).collect();
    let out_pipelines: Vec<gst::Pipeline> = outputs.iter().map(|o| o.pipeline.clone()).collect();
    let latest_mask = live && job.config.show == Show::LatestMask;
    let workers = if latest_mask {
        let display = Display::new(job.config.clone(), default_roi, want_masks, segmenter)?;
        Workers { inference: spawn_display(ctx.clone(), display, outputs, in_rx)?, frames_thread: "display", pusher: None }
    } else {
        let (out_tx, out_rx) = bounded::<Processed>(2);
        let processor = Processor::new(job.config.clone(), default_roi, want_masks);
        Workers {
            inference: spawn_inference(ctx.clone(), processor, segmenter, in_rx, out_tx)?,
            frames_thread: "inference",
            pusher: Some(spawn_pusher(ctx.clone(), outputs, out_rx)?),
        }
    };

    let in_bus = input.pipeline.bus().ok_or_else(|| PipelineError::gst("input", "no bus"))?;
    let outcome = (|| -> Result<Loop> {
        for p in &out_pipelines {
            p.set_state(gst::State::Playing).map_err(|_| bus_error(p, "output"))?;
        }
        input.pipeline.set_state(gst::State::Playing).map_err(|_| bus_error(&input.pipeline, "input"))?;
        Ok(watch(&ctx, &job, &input.pipeline, &in_bus, &out_buses, recording.as_ref(), &workers))
    })();

    // Shutdown in order; see the module comment.
    let failed = !matches!(outcome, Ok(Loop { error: None, .. }));
    if failed {
        ctx.abort.store(true, Ordering::SeqCst);
        for p in &out_pipelines {
            let _ = p.set_state(gst::State::Null);
        }
    }
    lock(&ctx.sender).take();
    let inference_result = join(workers.inference, workers.frames_thread);
    let pusher_result = workers.pusher.map(|p| join(p, "pusher"));
    let _ = input.pipeline.set_state(gst::State::Null);
    for p in &out_pipelines {
        let _ = p.set_state(gst::State::Null);
    }
    if let Some(r) = &recording {
        // A recording that never got a frame is an empty file: not left behind.
        if r.report().recorded == 0 {
            r.remove_file();
        }
    }
    let outcome = outcome?;
    // The inference thread's own error is the cause when it stopped the run; a pusher error after
    // an output error is only the consequence (a flushing appsrc).
    let FramesDone { largest_batch, latest, last_push } = inference_result?;
    if let Some(e) = outcome.error {
        return Err(e);
    }
    let last_push = match pusher_result {
        Some(r) => r?,
        None => last_push,
    };

    let mut c = lock(&ctx.collector);
    c.flush();
    if let Some(e) = c.take_metadata_error() {
        return Err(e);
    }
    if c.counters.frames_out == 0 {
        // Nothing decoded: no empty or unplayable file is left behind.
        staged = Staged::new();
        if let Some(e) = outcome.input_error {
            return Err(PipelineError::Stream { side: "input", message: format!("no video frame could be decoded: {e}"), debug: None });
        }
    }
    let mut counters = c.counters;
    if live {
        counters.mask_none = counters.frames_out.saturating_sub(counters.mask_fresh + counters.mask_held);
    }
    let first = c.records().next().map(|r| r.t_s).unwrap_or(0.0);
    let span = last_push.map(|t| t.saturating_duration_since(start).as_secs_f64() - first).unwrap_or(0.0);
    let report = Report {
        mode: if live { "live" } else { "recorded" },
        show: live.then(|| job.config.show.name()),
        batch: largest_batch.max(1),
        counters,
        wall_s: start.elapsed().as_secs_f64(),
        fps_out: if span > 0.0 && counters.frames_out > 1 { (counters.frames_out - 1) as f64 / span } else { 0.0 },
        latency_ms: c.summary(),
        rss_mb: (rss_start, rss_mb()),
        peak_rss_mb: peak_rss_mb(),
        input_error: outcome.input_error,
        stopped: outcome.stopped,
        masks: if live { c.mask_summary() } else { None },
        latest,
        recording: recording.map(|r| r.report()),
        records: if job.keep_records { c.records().cloned().collect() } else { Vec::new() },
    };
    Ok((report, staged))
}

/// `VmRSS` from /proc/self/status, in MiB.
fn rss_mb() -> Option<f64> {
    proc_status_mb("VmRSS:")
}

/// `VmHWM` (the peak of `VmRSS` so far) from /proc/self/status, in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    proc_status_mb("VmHWM:")
}

fn proc_status_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Starts a worker thread whose panic (a bug, or a segmenter that panics) becomes its error,
/// [`PipelineError::ThreadPanicked`] with the panic's message, so that the run ends with it
/// instead of waiting on a thread that is gone. `on_exit` runs however the thread ends.
fn spawn<T: Send + 'static>(
    thread: &'static str,
    on_exit: impl FnOnce() + Send + 'static,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    std::thread::Builder::new()
        .name(format!("lightunet-{thread}"))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(f))
                .unwrap_or_else(|payload| Err(PipelineError::panicked(thread, payload.as_ref())));
            on_exit();
            result
        })
        .map_err(|source| PipelineError::ThreadSpawn { thread, source })
}

fn join<T>(h: JoinHandle<Result<T>>, thread: &'static str) -> Result<T> {
    h.join().map_err(|payload| PipelineError::panicked(thread, payload.as_ref()))?
}

/// The first error on a pipeline's bus, for a failed state change.
fn bus_error(p: &gst::Pipeline, side: &'static str) -> PipelineError {
    if let Some(bus) = p.bus() {
        while let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return stream_error(side, e);
            }
        }
    }
    PipelineError::gst(side, "could not start")
}

fn stream_error(side: &'static str, e: &gst::message::Error) -> PipelineError {
    let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
    PipelineError::Stream {
        side,
        message: format!("{} [{src}]", e.error()),
        debug: e.debug().map(|d| d.to_string()),
    }
}

/// The capture end: each sample is copied into a [`Frame`] of our own and queued. Recorded mode
/// waits for room in the queue; live mode never blocks and drops the oldest frame instead, which
/// is why the callback holds the queue's receiving end too. A panic in it (a bug) is caught:
/// GStreamer gets an error and the run ends with it.
fn install_appsink_callbacks(appsink: &gst_app::AppSink, ctx: Arc<RunContext>, queue: Receiver<Frame>, coded: CodedDurations) {
    let eos_ctx = ctx.clone();
    let mut seq = 0u64;
    let mut continuity = Continuity::default();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let at = seq;
                match catch_unwind(AssertUnwindSafe(|| on_sample(sink, &ctx, &queue, &mut seq, &mut continuity, &coded))) {
                    Ok(flow) => flow,
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        gst::element_error!(sink, gst::StreamError::Failed, ("frame {}: {}", at, message));
                        lock(&ctx.callback_error).get_or_insert(PipelineError::CallbackPanicked { seq: at, message });
                        lock(&ctx.sender).take();
                        Err(gst::FlowError::Error)
                    }
                }
            })
            .eos(move |_| {
                lock(&eos_ctx.sender).take();
            })
            .build(),
    );
}

/// One sample from the appsink: copied into a [`Frame`] and queued; frames missing before it
/// (a timestamp gap) are counted as lost.
fn on_sample(
    sink: &gst_app::AppSink,
    ctx: &RunContext,
    queue: &Receiver<Frame>,
    seq: &mut u64,
    continuity: &mut Continuity,
    coded: &CodedDurations,
) -> std::result::Result<gst::FlowSuccess, gst::FlowError> {
    let capture = Instant::now();
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
    if ctx.max_frames.is_some_and(|n| *seq >= n) {
        lock(&ctx.sender).take();
        return Err(gst::FlowError::Eos);
    }
    let Captured { layout, fps, data } = match capture_bgr(&sample) {
        Ok(v) => v,
        Err(msg) => {
            gst::element_error!(sink, gst::StreamError::Format, ("cannot read frame {}: {}", seq, msg));
            return Err(gst::FlowError::Error);
        }
    };
    let buffer = sample.buffer();
    let frame = Frame {
        seq: *seq,
        pts: buffer.and_then(|b| b.pts()),
        duration: buffer.and_then(|b| b.duration()),
        fps,
        layout,
        data,
        stamps: Stamps::new(capture),
    };
    // One frame's time at the stream's rate, else the buffer's own duration.
    let period = frame_period(fps).or(frame.duration);
    // The container's duration of the frame, where a decoder replaced it with the nominal one.
    let duration = frame.pts.and_then(|p| coded.get(p)).or(frame.duration);
    let gap = continuity.frame(frame.pts, duration, period);
    *seq += 1;
    let end = frame.pts.map(|p| p + frame.duration.or(period).unwrap_or(gst::ClockTime::ZERO));
    *lock(&ctx.last_frame) = Some(LastFrame { at: capture, end, period });
    {
        let counters = &mut lock(&ctx.collector).counters;
        counters.frames_in += 1;
        if let Some(gap) = gap {
            counters.frames_lost += gap.frames;
            counters.timestamp_gaps += 1;
            if counters.timestamp_gaps <= MAX_GAP_WARNINGS {
                let s = |t: gst::ClockTime| t.nseconds() as f64 / 1e9;
                tracing::warn!(
                    "input: about {} frames missing between {:.3} s and {:.3} s (a timestamp gap: damaged or dropped frames)",
                    gap.frames, s(gap.from), s(gap.to)
                );
            }
        }
    }
    // Clone the sender out of the lock so that closing it never waits on a send.
    let Some(tx) = lock(&ctx.sender).clone() else { return Err(gst::FlowError::Eos) };
    match ctx.mode {
        Mode::Recorded => {
            // Waits for room, but not for a consumer that is gone or a run that failed: the
            // callback holds a receiver itself, so the queue would never report it closed.
            let mut frame = frame;
            loop {
                match tx.send_timeout(frame, Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(SendTimeoutError::Timeout(f)) => {
                        if ctx.consumer_gone.load(Ordering::SeqCst) || ctx.abort.load(Ordering::SeqCst) {
                            return Err(gst::FlowError::Eos);
                        }
                        frame = f;
                    }
                    Err(SendTimeoutError::Disconnected(_)) => return Err(gst::FlowError::Eos),
                }
            }
        }
        Mode::Live => match tx.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(frame)) => {
                let mut dropped = u64::from(queue.try_recv().is_ok());
                if let Err(TrySendError::Full(_)) = tx.try_send(frame) {
                    dropped += 1; // the consumer cannot have refilled it; be safe anyway
                }
                lock(&ctx.collector).counters.dropped += dropped;
            }
            Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Eos),
        },
    }
    Ok(gst::FlowSuccess::Ok)
}

/// The display thread (live, latest-mask): each frame through the [`Display`] and into the
/// outputs, in order; EOS into them when the input queue closes. Ends then, or at once on abort
/// or an output error; stops the latest-mask worker, whose error (a failed or panicking model)
/// is the thread's. An error leaves the outputs without EOS: the watch sees the thread gone with
/// the input still open and ends the run.
fn spawn_display(ctx: Arc<RunContext>, mut display: Display, mut outputs: Outputs, rx: Receiver<Frame>) -> Result<JoinHandle<Result<FramesDone>>> {
    let exit_ctx = ctx.clone();
    let on_exit = move || exit_ctx.consumer_gone.store(true, Ordering::SeqCst);
    spawn("display", on_exit, move || {
        let mut last_push = None;
        let shown = (|| -> Result<()> {
            loop {
                if ctx.abort.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let frame = match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        outputs.end_of_stream();
                        return Ok(());
                    }
                };
                last_push = Some(push_processed(&ctx, &mut outputs, display.show(frame)?)?);
            }
        })();
        let stopped = display.stop();
        match (shown, stopped) {
            // The worker stopped: its own error is the cause.
            (Err(PipelineError::ThreadStopped { .. }), Err(e)) | (Ok(()), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), Ok(c)) => Ok(FramesDone { largest_batch: 1, latest: Some(c), last_push }),
        }
    })
}

/// Records a processed frame in the collector and pushes it into the outputs; returns when.
fn push_processed(ctx: &RunContext, outputs: &mut Outputs, p: Processed) -> Result<Instant> {
    let Processed { mut frame, masks, stats, mask } = p;
    let now = Instant::now();
    frame.stamps.pushed = Some(now);
    lock(&ctx.collector).pushed(frame.seq, frame.pts, stats, frame.stamps, mask);
    outputs.push(frame, masks.as_ref())?;
    ctx.pushed_any.store(true, Ordering::SeqCst);
    Ok(now)
}

/// Timestamp gaps logged one by one; further ones are only counted.
const MAX_GAP_WARNINGS: u64 = 5;

/// One frame's time at `fps` (`None` for a variable or unknown rate).
fn frame_period(fps: gst::Fraction) -> Option<gst::ClockTime> {
    let (n, d) = (u64::try_from(fps.numer()).ok()?, u64::try_from(fps.denom()).ok()?);
    if n == 0 || d == 0 {
        return None;
    }
    gst::ClockTime::SECOND.mul_div_floor(d, n)
}

/// The inference thread: takes the frames already waiting (up to a batch), runs the processor on
/// them and hands them to the pusher in order. Ends when the input queue closes, when the
/// pusher is gone, or at once on abort.
fn spawn_inference(
    ctx: Arc<RunContext>,
    mut processor: Processor,
    mut segmenter: Box<dyn Segmenter>,
    rx: Receiver<Frame>,
    tx: Sender<Processed>,
) -> Result<JoinHandle<Result<FramesDone>>> {
    let exit_ctx = ctx.clone();
    let on_exit = move || exit_ctx.consumer_gone.store(true, Ordering::SeqCst);
    spawn("inference", on_exit, move || {
        let mut largest = 0usize;
        let done = |largest| Ok(FramesDone { largest_batch: largest, latest: None, last_push: None });
        let max_batch = processor.max_batch();
        loop {
            if ctx.abort.load(Ordering::SeqCst) {
                return done(largest);
            }
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return done(largest),
            };
            // Only frames already waiting join the batch: never wait for one.
            let mut frames = vec![first];
            while frames.len() < max_batch {
                match rx.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            largest = largest.max(frames.len());
            let now = Instant::now();
            for f in &mut frames {
                f.stamps.dequeue = Some(now);
            }
            for processed in processor.process_batch(frames, segmenter.as_mut())? {
                if tx.send(processed).is_err() {
                    return done(largest); // the pusher stopped (its error is reported by it)
                }
            }
        }
    })
}

/// The pusher thread: records each processed frame in the collector and pushes it into the
/// outputs; sends EOS into them when the inference thread's queue closes.
fn spawn_pusher(ctx: Arc<RunContext>, mut outputs: Outputs, rx: Receiver<Processed>) -> Result<JoinHandle<Result<Option<Instant>>>> {
    spawn("pusher", || {}, move || {
        let mut last = None;
        for processed in rx.iter() {
            last = Some(push_processed(&ctx, &mut outputs, processed)?);
        }
        outputs.end_of_stream();
        Ok(last)
    })
}

/// When the newest frame was captured, where it ends in stream time, and one frame's time.
#[derive(Clone, Copy)]
struct LastFrame {
    at: Instant,
    end: Option<gst::ClockTime>,
    period: Option<gst::ClockTime>,
}

/// Whether the input is still moving: a frame, a bus message, or frames waiting in our queue (the
/// input then waits for us, not we for it). Two guards use it:
/// - a demuxer that stopped before it found a stream, with nothing said: decodebin drops the
///   errors a new element posts until its state change returns (`connect_pad` filters them, in
///   GStreamer 1.22 and still), and a demuxer reading in pull mode that gives up at once (an MP4
///   cut before its index: "no playable streams") can post its error in that window; the input
///   then posts nothing, neither an error nor EOS. Seen about once in 40 runs on a loaded machine
///   (`truncated_files_process_what_decodes_and_finalise` hung 20 minutes).
/// - recorded mode: an input that makes no progress for [`ProcessConfig::input_timeout`] ends
///   the run (live mode has its own stall and first-frame timeouts).
struct InputProgress {
    last: Instant,
    frames: u64,
    /// Since when a demuxer has been seen stopped without a stream, and its name.
    silent: Option<(Instant, String)>,
    checked: Instant,
}

/// How long a demuxer must stay stopped without a stream, with no message from the input, before
/// the run says so: its own error, when it is not dropped, comes within milliseconds.
const SILENT_DEMUXER_WAIT: Duration = Duration::from_secs(1);

impl InputProgress {
    fn new() -> Self {
        let now = Instant::now();
        InputProgress { last: now, frames: 0, silent: None, checked: now }
    }

    fn message(&mut self) {
        self.last = Instant::now();
        self.silent = None;
    }

    /// `Ok(Some(why))`: the input is stuck after some frames (the run finishes with them);
    /// `Err`: it is stuck before any.
    fn check(&mut self, input: &gst::Pipeline, frames_in: u64, waiting: bool, cfg: &ProcessConfig, job: &Job) -> Result<Option<String>> {
        if frames_in != self.frames || waiting {
            self.frames = frames_in;
            self.last = Instant::now();
            self.silent = None;
        }
        let idle = self.last.elapsed();
        if frames_in == 0 && self.checked.elapsed() >= Duration::from_millis(250) {
            self.checked = Instant::now();
            match (silent_demuxer(input), &self.silent) {
                (None, _) => self.silent = None,
                (Some(name), None) => self.silent = Some((Instant::now(), name)),
                (Some(_), Some((since, name))) => {
                    if since.elapsed() >= SILENT_DEMUXER_WAIT && idle >= SILENT_DEMUXER_WAIT {
                        return Ok(Some(format!(
                            "{name} found no playable streams and stopped without an error (a truncated or damaged file?)"
                        )));
                    }
                }
            }
        }
        let Some(limit) = cfg.input_timeout.filter(|_| cfg.mode == Mode::Recorded) else { return Ok(None) };
        if idle < limit {
            return Ok(None);
        }
        if frames_in == 0 {
            return Err(PipelineError::InputStalled { input: job.source.to_string(), waited_s: limit.as_secs_f64() });
        }
        Ok(Some(format!("the input made no progress for {:.0} s after {frames_in} frames", limit.as_secs_f64())))
    }
}

struct Loop {
    error: Option<PipelineError>,
    input_error: Option<String>,
    stopped: Option<String>,
}

/// The main thread's loop until every output has posted EOS, an error, or a stop: reads the
/// buses, watches the workers, the stop flag and (live) a stalled source. The recording's bus is
/// read apart: its error ends the recording only, and a failed recording posts no EOS.
fn watch(
    ctx: &RunContext,
    job: &Job,
    input: &gst::Pipeline,
    in_bus: &gst::Bus,
    out_buses: &[gst::Bus],
    recording: Option<&RecordingHandle>,
    workers: &Workers,
) -> Loop {
    let cfg = &job.config;
    let mut out = Loop { error: None, input_error: None, stopped: None };
    let mut out_eos = vec![false; out_buses.len()];
    let mut record_eos = false;
    let mut eos_sent: Option<Instant> = None;
    let mut pusher_done: Option<Instant> = None;
    let mut last_report = Instant::now();
    let mut duration: Option<gst::ClockTime> = None;
    let close_input = || {
        lock(&ctx.sender).take();
    };
    let started = Instant::now();
    let mut progress = InputProgress::new();
    loop {
        if let Some(e) = lock(&ctx.callback_error).take() {
            out.error = Some(e);
            return out;
        }
        while let Some(msg) = in_bus.timed_pop(gst::ClockTime::from_mseconds(20)) {
            progress.message();
            match msg.view() {
                gst::MessageView::Eos(_) => close_input(),
                gst::MessageView::Error(e) => {
                    let err = stream_error("input", e);
                    tracing::debug!("{err}");
                    out.input_error.get_or_insert(err.to_string());
                    close_input();
                }
                gst::MessageView::Warning(w) => tracing::warn!("input: {}", w.error()),
                _ => {}
            }
        }
        for (i, bus) in out_buses.iter().enumerate() {
            while let Some(msg) = bus.pop() {
                match msg.view() {
                    gst::MessageView::Eos(_) => out_eos[i] = true,
                    gst::MessageView::Error(e) => {
                        out.error = Some(stream_error("output", e));
                        return out;
                    }
                    gst::MessageView::Warning(w) => tracing::warn!("output: {}", w.error()),
                    _ => {}
                }
            }
        }
        if let Some(r) = recording {
            while let Some(msg) = r.bus.pop() {
                match msg.view() {
                    gst::MessageView::Eos(_) => record_eos = true,
                    gst::MessageView::Error(e) if !r.failed() => r.fail(stream_error("recording", e).to_string()),
                    gst::MessageView::Warning(w) => tracing::warn!("recording: {}", w.error()),
                    _ => {}
                }
            }
        }
        if duration.is_none() && lock(&ctx.last_frame).is_some() {
            duration = input.query_duration::<gst::ClockTime>();
        }
        if out_eos.iter().all(|&e| e) && (record_eos || recording.is_none_or(RecordingHandle::failed)) {
            // Demuxers often stop quietly at the end of a truncated file: compare with the
            // container's duration so that the loss is reported, not silent. Only a container's:
            // a parser estimates an elementary stream's duration from its bitrate (a good H.264
            // stream of 2.40 s was "2.56 s").
            let last = *lock(&ctx.last_frame);
            let file = matches!(job.source, SourceSpec::File(_)) && has_demuxer(input);
            if let (true, None, None, Some(d), Some(last), Some(e)) = (file, &out.input_error, &out.stopped, duration, last, last.and_then(|f| f.end)) {
                let mut c = lock(&ctx.collector);
                let short = d.saturating_sub(e);
                let tolerance = gst::ClockTime::from_mseconds(100).max(last.period.map(|p| p / 2).unwrap_or_default());
                if job.max_frames.is_none_or(|m| c.counters.frames_in < m) && short > tolerance {
                    if let Some(p) = last.period {
                        c.counters.frames_lost += frames_in_gap(short + p, p).saturating_sub(1).max(1);
                    }
                    out.input_error = Some(format!(
                        "the input ended at {:.2} s of its {:.2} s duration (truncated or corrupted file?)",
                        e.nseconds() as f64 / 1e9,
                        d.nseconds() as f64 / 1e9
                    ));
                }
            }
            return out;
        }
        let stopped_early = match &workers.pusher {
            Some(p) => !p.is_finished(),
            None => true, // the display thread pushes: ended with the input open, it failed
        };
        if workers.inference.is_finished() && stopped_early && lock(&ctx.sender).is_some() {
            // The inference thread failed: its error is collected at join.
            out.error = Some(PipelineError::ThreadStopped { thread: workers.frames_thread });
            return out;
        }
        if workers.pushing_done() {
            let t = *pusher_done.get_or_insert_with(Instant::now);
            if !ctx.pushed_any.load(Ordering::SeqCst) {
                return out; // nothing was pushed: no EOS will come from an unnegotiated output
            }
            if t.elapsed() > Duration::from_secs(30) {
                out.error = Some(PipelineError::gst("output", "no EOS 30 s after the last frame; the file may be incomplete"));
                return out;
            }
        }
        if job.stop.load(Ordering::SeqCst) && eos_sent.is_none() {
            tracing::info!("stopping: sending EOS to the input (the output will be finalised)");
            out.stopped.get_or_insert("interrupted".into());
            input.send_event(gst::event::Eos::new());
            eos_sent = Some(Instant::now());
        }
        if eos_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            close_input(); // the source ignored EOS
        }
        if lock(&ctx.sender).is_some() && out.input_error.is_none() {
            let frames_in = lock(&ctx.collector).counters.frames_in;
            let waiting = lock(&ctx.sender).as_ref().is_some_and(|s| !s.is_empty());
            match progress.check(input, frames_in, waiting, cfg, job) {
                Ok(None) => {}
                Ok(Some(lost)) => {
                    tracing::warn!("input: {lost}; finishing with the frames already read");
                    out.input_error = Some(lost);
                    close_input();
                }
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
        if cfg.mode == Mode::Live {
            // A source that never sends is not "stalled" (that counts from a first frame): it
            // fails the run, naming the source, once the first-frame wait is over.
            if let Some(wait) = cfg.first_frame_timeout {
                let nothing_yet = lock(&ctx.last_frame).is_none() && !job.stop.load(Ordering::SeqCst);
                if nothing_yet && started.elapsed() > wait && lock(&ctx.sender).is_some() {
                    out.error = Some(PipelineError::NoFirstFrame { input: job.source.to_string(), waited_s: wait.as_secs_f64() });
                    return out;
                }
            }
            let stalled = lock(&ctx.last_frame).is_some_and(|f| f.at.elapsed() > cfg.stall_timeout);
            if stalled && lock(&ctx.sender).is_some() {
                tracing::warn!("the source sent no frame for {:.1} s: finishing", cfg.stall_timeout.as_secs_f64());
                out.stopped.get_or_insert(format!("source stalled for {:.1} s", cfg.stall_timeout.as_secs_f64()));
                close_input();
            }
            if last_report.elapsed() >= cfg.report_every {
                last_report = Instant::now();
                let c = lock(&ctx.collector).counters;
                tracing::info!(
                    "live: {} in, {} out, {} dropped, {} late (> {} ms)",
                    c.frames_in, c.frames_out, c.dropped, c.late, cfg.late_after.as_millis()
                );
            }
        }
    }
}
