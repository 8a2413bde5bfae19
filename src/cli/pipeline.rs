//! `process`, `live`, `phantom` and `bench pipeline`: the streaming pipeline from the command line.
//! Arguments are validated into a [`Job`] before anything starts; Ctrl-C sends EOS so that the
//! output is finalised, and a second Ctrl-C exits at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use lightunet::assets::{Catalog, Lookup, Source};
use lightunet::device::{parse_device, parse_dtype};
use lightunet::model::Variant;
use lightunet::phantom::{PhantomConfig, Probe};
use lightunet::postprocess::Cleanup;
use lightunet::pipeline::config::DEFAULT_MODEL_NICE;
use lightunet::pipeline::{
    run_staged, write_phantom_clip, Job, Mode, OverlayStyle, Percentiles, ProcessConfig, Report, Roi, Segmenter, Show,
    SinkSpec, SourceSpec, UNetSegmenter,
};

use super::outputs::{pending, stage_json};
use super::weights::Chosen;

#[derive(Debug, Args, Clone)]
pub struct ModelOpts {
    /// Variant (unet, light, lighter@C). Default: the weights' config.json (`<name>.config.json`
    /// or `config.json` beside them; built in for the embedded weights), else lighter@1.
    #[arg(long)]
    model: Option<Variant>,
    /// Weights (safetensors, PyTorch names), or `random` for a plumbing run. Default:
    /// $LIGHTUNET_WEIGHTS, else weights.safetensors in $XDG_CONFIG_HOME/lightunet
    /// (~/.config/lightunet), else in /usr/share/lightunet, else the embedded Lighter U-net@1
    /// trained on BUSI. The run says which it used.
    #[arg(long, value_name = "FILE")]
    weights: Option<String>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16 (reduced precision only on CUDA).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

#[derive(Debug, Args, Clone)]
pub struct ProcessingOpts {
    /// Region of interest x,y,w,h (scanner UI around the image stays out of the model's view).
    /// Default: the whole frame (the image region for the phantom).
    #[arg(long)]
    roi: Option<Roi>,
    /// Overlay style.
    #[arg(long, value_enum, default_value = "contour")]
    overlay: OverlayStyle,
    /// Outline thickness in pixels.
    #[arg(long, default_value_t = 2)]
    thickness: usize,
    /// Write fps, latency and lesion area on the frame.
    #[arg(long)]
    text: bool,
    /// Temporal smoothing: weight of the previous frames' probabilities, 0 (off) to <1.
    #[arg(long, default_value_t = 0.0)]
    smooth: f32,
    /// Which connected component is the lesion: confident (highest mean probability), largest
    /// (the original's), none (every component). The kept one is filled.
    #[arg(long, default_value = "confident", value_parser = super::cleanup_parser(), conflicts_with = "all_components")]
    cleanup: Cleanup,
    /// Same as --cleanup none.
    #[arg(long)]
    all_components: bool,
    /// Probability above which a pixel is lesion.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Model input side in pixels (the original: 256; smaller is faster and coarser).
    #[arg(long, default_value_t = 256)]
    input_size: usize,
    /// Recorded mode: run up to this many queued frames through the model at once (faster per
    /// frame; live mode always runs the newest frame alone).
    #[arg(long, default_value_t = 4)]
    batch: usize,
}

impl ProcessingOpts {
    fn config(&self, mode: Mode, queue: usize) -> ProcessConfig {
        let mut c = ProcessConfig { mode, queue_capacity: queue, roi: self.roi, ..Default::default() };
        c.overlay.style = self.overlay;
        c.overlay.thickness = self.thickness;
        c.overlay.text = self.text;
        c.smooth = self.smooth;
        c.cleanup = if self.all_components { Cleanup::None } else { self.cleanup };
        c.threshold = self.threshold;
        c.model_size = (self.input_size, self.input_size);
        c.batch = self.batch;
        c
    }
}

/// What `live` and `bench pipeline --mode live` show, and how the model shares the machine.
#[derive(Debug, Args, Clone)]
pub struct LiveOpts {
    /// latest-mask: every frame at the source's rate, drawn with the newest mask (the model takes
    /// the newest frame whenever it is free; a mask is up to one model run old, its age is
    /// reported). processed: only frames that went through the model, each with its own mask;
    /// frames that arrive while the model is busy are dropped (what `live` did before latest-mask).
    #[arg(long, value_enum, default_value = "latest-mask")]
    show: Show,
    /// latest-mask: threads of the model's own pool (default: one per core). Fewer leave cores
    /// to capture, drawing and output; the model's loops never queue behind theirs either way.
    #[arg(long, value_name = "N")]
    model_threads: Option<usize>,
    /// latest-mask: nice value of the model's threads and of the recording's encoder (0 to 19;
    /// 0: the same priority as the display path).
    #[arg(long, default_value_t = DEFAULT_MODEL_NICE, value_name = "N")]
    model_nice: i32,
    /// Also record the annotated video to FILE (.mkv: Matroska written as it goes; .mp4:
    /// fragmented, 1 s fragments), under its own name from the first frame: a crash or power
    /// cut leaves it playable up to about a second before. The display never waits for it: when
    /// the encoder falls behind, recorded frames are dropped (and counted), not displayed ones;
    /// if it fails (disk full) the recording stops and the display goes on.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

impl LiveOpts {
    fn apply(&self, c: &mut ProcessConfig) {
        c.show = self.show;
        c.model_threads = self.model_threads;
        c.model_nice = self.model_nice;
    }

    /// The default queue: one waiting frame for `processed` (see LIVE_QUEUE), two for
    /// `latest-mask` (see LATEST_MASK_QUEUE).
    fn default_queue(&self) -> usize {
        match self.show {
            Show::LatestMask => LATEST_MASK_QUEUE,
            Show::Processed => LIVE_QUEUE,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = super::exit::HELP)]
pub struct ProcessArgs {
    /// Input video file (anything GStreamer decodes), or `phantom[:WxH@FPS]` (use with --frames).
    /// `file:NAME` is always a file; a name starting with `-` goes after `--`.
    input: std::ffi::OsString,
    /// Output: .mp4/.m4v/.mov/.mkv (H.264), .webm (VP8), .avi (MJPEG), or frames_%05d.png.
    #[arg(short, long)]
    output: PathBuf,
    /// Raw masks (0/255) as a second output, same formats (a PNG pattern keeps them lossless).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Per-frame JSON lines: pts, lesion, area, bbox, centroid, diameter, probability, latency.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Latency and counter report (JSON) written at the end.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Replace existing outputs (never an input: an output that is an input, by any name, is
    /// always refused).
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many frames, at least 1 (required for the endless phantom).
    #[arg(long)]
    frames: Option<u64>,
    /// Frames the input queue holds.
    #[arg(long, default_value_t = 4)]
    queue: usize,
    /// Exit 0 when input frames were lost (decode errors, timestamp gaps, a truncated file)
    /// instead of 3; the loss is still reported.
    #[arg(long)]
    accept_loss: bool,
    /// Fail when the input makes no progress (no frame, no message) for this many seconds;
    /// `never` waits forever.
    #[arg(long, default_value = "30", value_parser = parse_wait)]
    input_timeout: Wait,
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    processing: ProcessingOpts,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Input: a gst-launch description ending in a video pad, `phantom[:WxH@FPS]`, or a file
    /// (played in real time). An existing path is a file; `file:NAME` always is.
    #[arg(long, conflicts_with = "pipeline")]
    source: Option<String>,
    /// Output: a gst-launch description starting with a sink pad (text with `!`, or an element
    /// name alone or with `property=value`), or else a file name (encoder by extension; `file:NAME`
    /// always is one). Default: a window.
    #[arg(long, conflicts_with = "pipeline")]
    sink: Option<String>,
    /// A named pipeline from the pipelines folder (see pipelines/README.md).
    #[arg(long)]
    pipeline: Option<String>,
    /// Values for a named pipeline's ${var} placeholders, e.g. --set port=5000.
    #[arg(long = "set", value_name = "VAR=VALUE")]
    set: Vec<String>,
    /// A folder of named pipelines looked in first (default: $LIGHTUNET_PIPELINES); then
    /// $XDG_CONFIG_HOME/lightunet/pipelines (~/.config/lightunet/pipelines),
    /// /usr/share/lightunet/pipelines, and the pipelines embedded in the binary. A file hides the
    /// pipeline of the same name further down.
    #[arg(long, value_name = "DIR")]
    pipelines_dir: Option<PathBuf>,
    /// List the named pipelines, where each comes from and what it overrides, and exit.
    #[arg(long)]
    list: bool,
    /// Frames the queue holds before the oldest is dropped (default: 2 with latest-mask, where
    /// the queue is normally empty; 1 with processed, the lowest latency).
    #[arg(long)]
    queue: Option<usize>,
    /// Raw masks (0/255) as a second output, as `process --masks` (a PNG pattern keeps them
    /// lossless); one per frame shown, the mask it was drawn with.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// A frame later than this (capture to output, ms) is counted late.
    #[arg(long, default_value_t = 500)]
    late_ms: u64,
    /// Seconds between counter reports.
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// Finish when the source sends nothing for this many seconds (after its first frame).
    #[arg(long, default_value_t = 10)]
    stall_timeout: u64,
    /// Fail when the source sends no first frame within this many seconds; `never` waits forever.
    #[arg(long, default_value = "30", value_parser = parse_wait)]
    first_frame_timeout: Wait,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Latency and counter report (JSON) written at the end.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    live: LiveOpts,
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    processing: ProcessingOpts,
}

#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Video output (.mp4, .mkv, .webm, .avi, frames_%05d.png).
    #[arg(short, long)]
    output: PathBuf,
    /// Ground-truth masks (0/255), e.g. masks_%05d.png (lossless) or masks.mkv.
    #[arg(long)]
    masks: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    frames: u64,
    /// Frame size WxH.
    #[arg(long, default_value = "640x480")]
    size: String,
    #[arg(long, default_value_t = 25)]
    fps: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Convex (fan) probe instead of linear.
    #[arg(long)]
    convex: bool,
    /// Draw calipers on the lesion.
    #[arg(long)]
    calipers: bool,
    /// No scanner text around the image.
    #[arg(long)]
    no_text: bool,
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Input: `phantom[:WxH@FPS]`, a file, or a gst-launch description.
    #[arg(long, default_value = "phantom:960x720@25")]
    source: String,
    /// Output: a gst-launch sink description or a file.
    #[arg(long, default_value = "fakesink")]
    sink: String,
    /// Frames to run.
    #[arg(long, default_value_t = 100)]
    frames: u64,
    /// recorded (every frame, as fast as possible) or live (real time, drops).
    #[arg(long, default_value = "recorded")]
    mode: String,
    /// Frames the input queue holds (default as `live` and `process`: live 2 with latest-mask, 1
    /// with processed; recorded 4).
    #[arg(long)]
    queue: Option<usize>,
    /// Timed model-only runs (same variant and device) for the pipeline/model throughput ratio,
    /// half before the pipeline runs and half after (the machine's speed drifts).
    #[arg(long, default_value_t = 40)]
    model_runs: usize,
    /// JSON report path (also printed with --json).
    #[arg(long)]
    report: Option<PathBuf>,
    /// PNG plot: latency per frame over time and a histogram.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    overwrite: bool,
    /// --mode live: what is shown, the model's threads and priority, a recording.
    #[command(flatten)]
    live: LiveOpts,
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    processing: ProcessingOpts,
}

/// A wait in seconds, or `never`.
#[derive(Debug, Clone, Copy)]
struct Wait(Option<Duration>);

fn parse_wait(s: &str) -> Result<Wait, String> {
    if s == "never" {
        return Ok(Wait(None));
    }
    match parse_seconds(s)? {
        // A wait of nothing would fail a run that is merely starting.
        d if d.is_zero() => Err(format!("`{s}`: give a positive number of seconds, or `never` to wait forever")),
        d => Ok(Wait(Some(d))),
    }
}

/// Seconds as a finite, non-negative number that fits a [`Duration`] (`inf` or `1e300` would
/// panic in `Duration::from_secs_f64`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}`: seconds must be a finite number >= 0"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("`{s}`: {e}"))
}

/// Live, processed: one waiting frame. When the model is slower than the source, every further
/// frame the queue may hold adds a frame interval of latency (measured at 1280x720@30 on the
/// 2-core machine: p99 100 ms with 1, 134 ms with 2), and none adds output frames.
const LIVE_QUEUE: usize = 1;

/// Live, latest-mask: the display thread takes each frame within a millisecond or two, so the
/// queue is normally empty and its length adds no latency; the second place keeps a frame when
/// the display thread is descheduled for a frame interval (a loaded machine) instead of dropping
/// it.
const LATEST_MASK_QUEUE: usize = 2;

/// How long a run may take to finish after Ctrl-C or SIGTERM before the process exits anyway:
/// the frames already queued go through the model first (up to a queue and a batch: 8 frames by
/// default, 4 s of U-net on a CPU), then the outputs are finalised.
const FINISH_GRACE: Duration = Duration::from_secs(60);

/// Ctrl-C / SIGTERM: the first sets the flag (EOS, finalise), the second exits at once, and
/// the process exits anyway `FINISH_GRACE` after the first.
fn stop_flag() -> Arc<AtomicBool> {
    super::interrupt::install("finishing: the output will be finalised", FINISH_GRACE)
}

/// The model: its segmenter, the network itself (for `bench pipeline`'s model-only timing), the
/// device, and the weights and variant chosen.
fn segmenter(opts: &ModelOpts) -> anyhow::Result<(Box<dyn Segmenter>, lightunet::model::InferenceNet, Device, Chosen)> {
    let device = parse_device(&opts.device)?;
    let dtype = parse_dtype(&opts.dtype)?;
    if device.is_cpu() && dtype != DType::F32 {
        bail!("the CPU path runs in f32 only");
    }
    let chosen = match opts.weights.as_deref() {
        Some("random") => Chosen::random(opts.model.unwrap_or(Variant::Lighter(1))),
        file => Chosen::new(file.map(Path::new), opts.model, Some(Variant::Lighter(1)))?,
    };
    let net = chosen.load(&device)?.to_device_dtype(&device, dtype)?;
    tracing::info!(
        "model {} on {}, weights: {}",
        chosen.variant,
        if device.is_cuda() { "cuda" } else { "cpu" },
        chosen.describe()
    );
    Ok((Box::new(UNetSegmenter::new(net.clone())), net, device, chosen))
}

/// Whether a sink description shows video in a window (autovideosink, xvimagesink, glimagesink...).
fn wants_display(sink: &str) -> bool {
    sink.split('!').any(|e| {
        let name = e.split_whitespace().next().unwrap_or("");
        name.ends_with("videosink") && !matches!(name, "fakevideosink" | "intervideosink") || name.ends_with("imagesink")
    })
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The human summary of a run: counters and one row per stage (`--report` has the same as JSON).
fn report_table(report: &Report) -> String {
    let c = &report.counters;
    let mut s = format!(
        "{} run: {} frames in, {} out, {} at the output sink, {} dropped, {} late; {:.1} s, {:.2} frames/s out\n",
        report.mode, c.frames_in, c.frames_out, c.frames_at_sink, c.dropped, c.late, report.wall_s, report.fps_out
    );
    if let (Some(a), Some(b)) = report.rss_mb {
        let peak = report.peak_rss_mb.map(|p| format!(", peak {p:.0} MiB")).unwrap_or_default();
        s.push_str(&format!("resident memory: {a:.0} MiB at the start, {b:.0} MiB at the end{peak}\n"));
    }
    if c.frames_lost > 0 || report.input_error.is_some() {
        let gaps = if c.timestamp_gaps > 0 { format!(" (timestamp gaps: {})", c.timestamp_gaps) } else { String::new() };
        // An input that failed or stalled part-way lost frames, but how many is unknown.
        let lost = if c.frames_lost > 0 { c.frames_lost.to_string() } else { "an unknown number of".into() };
        s.push_str(&format!("input: {lost} frames lost{gaps}{}\n", report.input_error.as_ref().map(|e| format!("; {e}")).unwrap_or_default()));
    }
    if report.batch > 1 {
        s.push_str(&format!("queued frames went through the model together, up to {} at a time (inference: the whole batch)\n", report.batch));
    }
    if let Some(show) = report.show {
        s.push_str(&format!(
            "shown ({show}): {} frames with a fresh mask, {} with a held one, {} before the first mask\n",
            c.mask_fresh, c.mask_held, c.mask_none
        ));
    }
    if let Some(m) = &report.masks {
        s.push_str(&format!(
            "mask age: p50 {:.1} frames ({:.1} ms), p99 {:.1} frames ({:.1} ms), max {:.0} frames; new masks {:.2}/s",
            m.age_frames.p50, m.age_ms.p50, m.age_frames.p99, m.age_ms.p99, m.age_frames.max, m.refresh_fps
        ));
        if m.model_ms.n > 0 {
            s.push_str(&format!("; model run p50 {:.1} ms, p99 {:.1} ms", m.model_ms.p50, m.model_ms.p99));
        }
        s.push('\n');
    }
    if let Some(l) = &report.latest {
        s.push_str(&format!(
            "model inputs: {} made, {} replaced by a newer frame before the model took them; {} masks made\n",
            l.submitted, l.replaced, l.inferred
        ));
    }
    if let Some(r) = &report.recording {
        s.push_str(&format!(
            "recording {}: {} frames, {} dropped (the encoder was behind){}\n",
            r.path.display(),
            r.recorded,
            r.dropped,
            r.error.as_ref().map(|e| format!("; FAILED after that ({} frames not recorded): {e}", r.after_failure)).unwrap_or_default()
        ));
    }
    s.push_str(&format!("{:<13} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "stage (ms)", "n", "mean", "p50", "p95", "p99", "max"));
    for (name, p) in &report.latency_ms {
        s.push_str(&format!(
            "{:<13} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            name, p.n, p.mean, p.p50, p.p95, p.p99, p.max
        ));
    }
    s
}

/// The end of `process`: the summary, then the status: 130 when interrupted, 3 when input frames
/// were lost (0 with `--accept-loss`), see [`super::exit`].
fn finish_process(report: &Report, accept_loss: bool) -> anyhow::Result<()> {
    use super::exit::{WithStatus, FRAMES_LOST, INTERRUPTED};
    eprint!("{}", report_table(report));
    if report.stopped.is_some() {
        let message = format!("interrupted after {} frames (the output was finalised)", report.counters.frames_out);
        return Err(WithStatus { status: INTERRUPTED, message }.into());
    }
    let c = &report.counters;
    if c.frames_lost == 0 && report.input_error.is_none() {
        return Ok(());
    }
    let why = match (&report.input_error, c.frames_lost) {
        (Some(e), 0) => format!("the input failed after {} frames: {e}", c.frames_in),
        (Some(e), n) => format!("about {n} input frames were lost ({e})"),
        (None, n) => format!("about {n} input frames were lost (timestamp gaps: {}; damaged or undecodable frames)", c.timestamp_gaps),
    };
    if accept_loss {
        tracing::warn!("{why}; accepted (--accept-loss)");
        return Ok(());
    }
    let message = format!("{why}. The output was finalised with the {} frames read; --accept-loss exits 0 on such a loss (exit status {FRAMES_LOST})", c.frames_out);
    Err(WithStatus { status: FRAMES_LOST, message }.into())
}

fn finish(report: &Report, interrupted_is_error: bool) -> anyhow::Result<()> {
    eprint!("{}", report_table(report));
    if let Some(e) = &report.input_error {
        bail!("the input failed after {} frames (the output was finalised): {e}", report.counters.frames_in);
    }
    if interrupted_is_error && report.stopped.is_some() {
        bail!("interrupted after {} frames (the output was finalised)", report.counters.frames_out);
    }
    if let Some(r) = &report.recording {
        if let Some(e) = &r.error {
            bail!("the recording {} failed after {} frames (the display went on): {e}", r.path.display(), r.recorded);
        }
    }
    Ok(())
}

pub fn process(args: ProcessArgs) -> anyhow::Result<()> {
    if args.frames == Some(0) {
        bail!("--frames 0 would write nothing: give at least 1, or leave it out for the whole input");
    }
    let source = SourceSpec::parse_os(&args.input, args.frames)?;
    if let SourceSpec::Launch(_) = source {
        bail!("input {} does not exist (process takes a file or phantom[:WxH@FPS]; use `live --source` for pipelines)", args.input.to_string_lossy());
    }
    if matches!(source, SourceSpec::Phantom { frames: None, .. }) {
        bail!("the phantom never ends: pass --frames N");
    }
    let output = SinkSpec::File { path: args.output.clone(), overwrite: args.overwrite };
    let mut job = Job::new(source, output);
    job.masks = args.masks.map(|p| SinkSpec::File { path: p, overwrite: args.overwrite });
    job.metadata = args.metadata;
    job.overwrite = args.overwrite;
    job.max_frames = args.frames;
    job.config = args.processing.config(Mode::Recorded, args.queue);
    job.config.input_timeout = args.input_timeout.0;
    job.config.validate()?;
    // Every output checked against the input and each other before the model loads.
    let mut plan = job.output_plan()?;
    if let Some(r) = &args.report {
        plan.file("report", r, args.overwrite);
    }
    plan.check()?;
    let report_file = pending("report", &args.report, args.overwrite)?;
    let (seg, _, _, _) = segmenter(&args.model)?;
    job.stop = stop_flag();
    let (report, mut staged) = run_staged(job, seg).context("process")?;
    if report.counters.frames_out == 0 {
        bail!("no frame reached the output: nothing was written");
    }
    stage_json(report_file, &serde_json::to_value(&report)?, &mut staged)?;
    staged.commit()?;
    eprintln!("wrote {}", args.output.display());
    finish_process(&report, args.accept_loss)
}

pub fn live(args: LiveArgs) -> anyhow::Result<()> {
    let catalog = Lookup::from_env().pipelines(args.pipelines_dir.as_deref());
    if args.list {
        let (text, invalid) = list_pipelines(&catalog)?;
        print!("{text}");
        if invalid > 0 {
            bail!("{invalid} of the pipelines cannot be loaded (flagged INVALID above)");
        }
        return Ok(());
    }
    let mut queue = args.queue;
    let mut roi = args.processing.roi;
    let (source, sink) = match &args.pipeline {
        Some(name) => {
            let found = catalog.get(name)?;
            tracing::info!("pipeline `{name}` from {}", found.source);
            let p = found.pipeline;
            let mut vars = BTreeMap::new();
            for kv in &args.set {
                let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected VAR=VALUE"))?;
                vars.insert(k.to_string(), v.to_string());
            }
            let (src, sink) = p.resolve(&vars)?;
            queue = queue.or(p.queue);
            if roi.is_none() {
                roi = p.roi.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
            }
            tracing::info!("pipeline `{}`: {} | {}", p.name, src, sink);
            (src, sink)
        }
        None => (
            args.source.clone().unwrap_or_else(|| "phantom".into()),
            args.sink.clone().unwrap_or_else(|| "autovideosink".into()),
        ),
    };
    if wants_display(&sink) && !has_display() {
        tracing::warn!(
            "`{sink}` opens a window, but DISPLAY and WAYLAND_DISPLAY are unset: nothing will be shown \
             (GStreamer falls back to a fake sink). On a headless machine use --sink with a file, \
             a network sink or fakesink."
        );
    }
    if args.frames == Some(0) {
        bail!("--frames 0 would process nothing: give at least 1, or leave it out to run until stopped");
    }
    let source = SourceSpec::parse(&source, args.frames)?;
    let mut job = Job::new(source, SinkSpec::parse(&sink, args.overwrite));
    job.masks = args.masks.clone().map(|p| SinkSpec::File { path: p, overwrite: args.overwrite });
    job.record = args.live.record.clone();
    job.metadata = args.metadata;
    job.overwrite = args.overwrite;
    job.max_frames = args.frames;
    let mut processing = args.processing.clone();
    processing.roi = roi;
    job.config = processing.config(Mode::Live, queue.unwrap_or(args.live.default_queue()));
    args.live.apply(&mut job.config);
    job.config.late_after = Duration::from_millis(args.late_ms);
    job.config.report_every = Duration::from_secs(args.report_every.max(1));
    job.config.stall_timeout = Duration::from_secs(args.stall_timeout.max(1));
    job.config.first_frame_timeout = args.first_frame_timeout.0;
    job.config.validate()?;
    let mut plan = job.output_plan()?;
    if let Some(r) = &args.report {
        plan.file("report", r, args.overwrite);
    }
    plan.check()?;
    let writes_files = matches!(job.output, SinkSpec::File { .. })
        || matches!(job.masks, Some(SinkSpec::File { .. }))
        || job.metadata.is_some()
        || args.report.is_some();
    let report_file = pending("report", &args.report, args.overwrite)?;
    let (seg, _, _, _) = segmenter(&args.model)?;
    job.stop = stop_flag();
    if let Some(d) = args.duration {
        let stop = job.stop.clone();
        // Detached on purpose: it only sets a flag and ends with the process.
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let (report, mut staged) = run_staged(job, seg).context("live")?;
    if report.counters.frames_out == 0 && writes_files {
        eprint!("{}", report_table(&report));
        bail!("no frame reached the output: nothing was written");
    }
    stage_json(report_file, &serde_json::to_value(&report)?, &mut staged)?;
    staged.commit()?;
    finish(&report, false)
}

/// `live --list`: each pipeline with its description, where it comes from and what it hides,
/// then the folders looked in.
fn list_pipelines(catalog: &Catalog) -> anyhow::Result<(String, usize)> {
    let mut s = String::new();
    let listing = catalog.list()?;
    for p in &listing.valid {
        s.push_str(&format!("{:<20} {}\n", p.pipeline.name, p.pipeline.description));
        let mut from = format!("{:<20} from {}", "", p.source);
        if p.same_as_embedded {
            from.push_str(", the same as the embedded one");
        } else if !p.hides.is_empty() {
            let hidden: Vec<String> = p.hides.iter().map(|h| if *h == Source::Embedded { "the embedded one".into() } else { h.to_string() }).collect();
            from.push_str(&format!(", overrides {}", hidden.join(" and ")));
        }
        s.push_str(&from);
        s.push('\n');
    }
    for bad in &listing.invalid {
        s.push_str(&format!("{:<20} INVALID: {}\n", bad.name, bad.error));
    }
    let folders: Vec<String> = catalog.folders().iter().map(|(d, o)| format!("{} ({o})", d.display())).collect();
    s.push_str(&format!(
        "\nlooked in: {}{}the pipelines embedded in the binary (a folder that does not exist is skipped)\n",
        folders.join(", "),
        if folders.is_empty() { "" } else { ", then " }
    ));
    Ok((s, listing.invalid.len()))
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s.split_once('x').with_context(|| format!("size `{s}`: expected WxH"))?;
    Ok((w.parse().with_context(|| format!("width `{w}`"))?, h.parse().with_context(|| format!("height `{h}`"))?))
}

pub fn phantom(args: PhantomArgs) -> anyhow::Result<()> {
    let (width, height) = parse_size(&args.size)?;
    if args.fps == 0 {
        bail!("--fps must be positive");
    }
    let cfg = PhantomConfig {
        width,
        height,
        fps: args.fps,
        seed: args.seed,
        calipers: args.calipers,
        scanner_text: !args.no_text,
        probe: if args.convex { Probe::Convex } else { Probe::Linear },
        ..Default::default()
    };
    let video = SinkSpec::File { path: args.output.clone(), overwrite: args.overwrite };
    let masks = args.masks.clone().map(|p| SinkSpec::File { path: p, overwrite: args.overwrite });
    let t = Instant::now();
    let (x, y, w, h) = write_phantom_clip(&cfg, args.frames, &video, masks.as_ref())?;
    eprintln!(
        "wrote {} frames {}x{} at {} fps to {}{} in {:.1} s; image region (--roi) {x},{y},{w},{h}",
        args.frames,
        width,
        height,
        args.fps,
        args.output.display(),
        args.masks.as_ref().map(|m| format!(" (masks: {})", m.display())).unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Most timed model-only runs of `bench pipeline` (each keeps its time; 10000 runs of the
/// fastest model take minutes).
const MAX_MODEL_RUNS: usize = 10_000;

/// One of `bench pipeline --mode live`'s targets: the measured value beside its bar.
#[derive(serde::Serialize)]
struct Target {
    name: &'static str,
    value: Option<f64>,
    bar: String,
    /// `None`: reported, no bar.
    pass: Option<bool>,
}

/// The source's frame rate over the frames shown: (n - 1) over the time from the first capture
/// to the last (exact when every frame is shown, as with latest-mask).
fn source_fps(report: &Report) -> Option<f64> {
    let (first, last) = (report.records.first()?, report.records.last()?);
    let frames = last.frame.checked_sub(first.frame)?;
    (last.t_s > first.t_s && frames > 0).then(|| frames as f64 / (last.t_s - first.t_s))
}

/// The live targets (issue 13): frames reaching the sink, a frame's own trip, how often masks are
/// refreshed against the model alone, mask age, and no growth over the run.
fn live_targets(report: &Report, model_fps: f64, thirds: Option<(Percentiles, Percentiles)>) -> Vec<Target> {
    let c = &report.counters;
    let stage = |name: &str| report.latency_ms.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).filter(|p| p.n > 0);
    let bar = |name, value: Option<f64>, bar: &str, ok: &dyn Fn(f64) -> bool| Target { name, value, bar: bar.into(), pass: value.map(ok) };
    let info = |name, value: Option<f64>, bar: &str| Target { name, value, bar: bar.into(), pass: None };
    let at_sink = (c.frames_in > 0).then(|| c.frames_at_sink as f64 / c.frames_in as f64);
    let refresh = report.masks.as_ref().map(|m| m.refresh_fps);
    let reachable = source_fps(report).map(|s| s.min(model_fps));
    let mut v = vec![
        bar("frames at the sink / frames captured", at_sink, ">= 0.97", &|x| x >= 0.97),
        bar("capture to sink, p99 (ms)", stage("end_to_end").map(|p| p.p99), "<= 15", &|x| x <= 15.0),
        bar("masks refreshed / model alone (frames/s)", refresh.map(|r| r / model_fps), ">= 0.85", &|x| x >= 0.85),
        info("masks refreshed / min(model alone, source)", refresh.zip(reachable).map(|(r, m)| r / m), "(the source caps the refresh)"),
        info("mask age p50 (frames)", report.masks.as_ref().map(|m| m.age_frames.p50), "reported"),
        info("mask age p99 (frames)", report.masks.as_ref().map(|m| m.age_frames.p99), "reported"),
        info("mask age p50 (ms)", report.masks.as_ref().map(|m| m.age_ms.p50), "reported"),
        info("mask age p99 (ms)", report.masks.as_ref().map(|m| m.age_ms.p99), "reported"),
    ];
    // No growth: the last third's p99 within 25% (at least 2 ms) of the first third's.
    let growth = thirds.map(|(a, b)| (b.p99, a.p99));
    v.push(Target {
        name: "capture to sink p99, last third (ms)",
        value: growth.map(|g| g.0),
        bar: growth.map_or("<= first third + max(2, 25%)".into(), |(_, first)| format!("<= {:.2} (first third {first:.2})", first + (0.25 * first).max(2.0))),
        pass: growth.map(|(last, first)| last <= first + (0.25 * first).max(2.0)),
    });
    if let Some(r) = &report.recording {
        v.push(info("recording: frames dropped (encoder behind)", Some(r.dropped as f64), "reported"));
    }
    v
}

/// Median model-only time per frame (ms) and frames/s, running `batch` frames at a time.
fn time_model(net: &lightunet::model::InferenceNet, device: &Device, size: (usize, usize), batch: usize, runs: usize) -> anyhow::Result<(f64, f64)> {
    let x = Tensor::rand(0f32, 1f32, (batch, 3, size.1, size.0), device)?;
    let once = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let y = net.forward(&x)?;
        y.flatten_all()?.get(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    once()?;
    let mut ms = (0..runs.max(1)).map(|_| once()).collect::<anyhow::Result<Vec<f64>>>()?;
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2] / batch as f64;
    Ok((median, 1000.0 / median))
}

pub fn bench_pipeline(args: BenchPipelineArgs) -> anyhow::Result<()> {
    let mode = match args.mode.as_str() {
        "recorded" => Mode::Recorded,
        "live" => Mode::Live,
        other => bail!("--mode {other}: expected recorded or live"),
    };
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    if !(1..=MAX_MODEL_RUNS).contains(&args.model_runs) {
        bail!("--model-runs must be 1 to {MAX_MODEL_RUNS}, got {}", args.model_runs);
    }
    let source = SourceSpec::parse(&args.source, Some(args.frames))?;
    let mut job = Job::new(source, SinkSpec::parse(&args.sink, args.overwrite));
    job.overwrite = args.overwrite;
    job.max_frames = Some(args.frames);
    job.keep_records = true;
    let queue = args.queue.unwrap_or(if mode == Mode::Live { args.live.default_queue() } else { 4 });
    job.config = args.processing.config(mode, queue);
    if mode == Mode::Live {
        args.live.apply(&mut job.config);
    }
    job.record = args.live.record.clone();
    job.config.validate()?;
    let mut plan = job.output_plan()?;
    if let Some(r) = &args.report {
        plan.file("report", r, args.overwrite);
    }
    if let Some(p) = &args.plot {
        plan.file("plot", p, args.overwrite);
    }
    plan.check()?;
    let report_file = pending("report", &args.report, args.overwrite)?;
    let plot_file = pending("plot", &args.plot, args.overwrite)?;
    let (seg, net, device, chosen) = segmenter(&args.model)?;
    // The ratio the pipeline is judged by is against the model one frame at a time; when recorded
    // mode batches, the model at that batch is timed too, so that both ratios are shown. Each is
    // timed before and after the run and the two medians averaged: on a shared machine the speed
    // drifts by more than the effect measured.
    let batch = if mode == Mode::Recorded { job.config.batch } else { 1 };
    let half = args.model_runs.div_ceil(2);
    let model_size = job.config.model_size;
    // Latest-mask runs the model on a pool of its own at a lower priority: the model alone is
    // timed the same way, so that the refresh ratio compares like with like (on a quiet machine
    // the priority changes nothing; on a shared one it does).
    let latest_mask = mode == Mode::Live && job.config.show == Show::LatestMask;
    let model_pool = if latest_mask {
        let threads = job.config.model_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let nice = job.config.model_nice;
        Some((
            threads,
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .start_handler(move |_| {
                    let _ = lightunet::pipeline::priority::lower_this_thread(nice);
                })
                .build()?,
        ))
    } else {
        None
    };
    let time = |b: usize| match &model_pool {
        Some((_, pool)) => pool.install(|| time_model(&net, &device, model_size, b, half)),
        None => time_model(&net, &device, model_size, b, half),
    };
    let before = (time(1)?, if batch > 1 { Some(time(batch)?) } else { None });
    job.stop = stop_flag();
    let job_nice = job.config.model_nice;
    let (report, mut staged) = run_staged(job, seg).context("bench pipeline")?;
    let after = (time(1)?, if batch > 1 { Some(time(batch)?) } else { None });
    drop(net);
    let mean = |a: (f64, f64), b: (f64, f64)| {
        let ms = (a.0 + b.0) / 2.0;
        (ms, 1000.0 / ms)
    };
    let (model_ms, model_fps) = mean(before.0, after.0);
    let batched = before.1.zip(after.1).map(|(a, b)| mean(a, b));
    let thirds = lightunet::pipeline::end_to_end_thirds(&report.records);
    let targets = if mode == Mode::Live { live_targets(&report, model_fps, thirds) } else { Vec::new() };
    let json = serde_json::json!({
        "source": args.source, "sink": args.sink, "mode": report.mode, "variant": chosen.variant.to_string(),
        "weights": chosen.describe(),
        "device": args.model.device, "threads": candle_core::utils::get_num_threads(),
        "model_only": { "median_ms": model_ms, "fps": model_fps, "runs": args.model_runs,
                        "threads": model_pool.as_ref().map(|p| p.0), "nice": model_pool.as_ref().map(|_| job_nice),
                        "median_ms_before": before.0 .0, "median_ms_after": after.0 .0 },
        "pipeline_batch": batch,
        "model_only_at_batch": batched.map(|(ms, fps)| serde_json::json!({ "batch": batch, "median_ms_per_frame": ms, "fps": fps })),
        "pipeline_fps_out": report.fps_out, "pipeline_over_model": report.fps_out / model_fps,
        "counters": report.counters, "wall_s": report.wall_s, "rss_mb": report.rss_mb, "peak_rss_mb": report.peak_rss_mb,
        "latency_ms": report.latency_ms.iter().map(|(n, p)| (n.to_string(), serde_json::to_value(p).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        "end_to_end_first_third_ms": thirds.map(|t| t.0), "end_to_end_last_third_ms": thirds.map(|t| t.1),
        "show": report.show, "masks": report.masks, "latest": report.latest, "recording": report.recording,
        "source_fps": source_fps(&report),
        "targets": targets,
        "input_error": report.input_error,
    });
    stage_json(report_file, &json, &mut staged)?;
    if let Some(f) = plot_file {
        lightunet::pipeline::plot::latency_plot(&report.records, f.path()).with_context(|| format!("writing {}", f.dest().display()))?;
        staged.push(f);
    }
    staged.commit()?;
    if let Some(p) = &args.plot {
        eprintln!("plot: {}", p.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", report_table(&report));
        if let Some((threads, _)) = &model_pool {
            println!("model only timed as the run runs it: a pool of {threads} threads at nice {job_nice}");
        }
        println!(
            "model only: {model_ms:.1} ms/frame ({model_fps:.2} frames/s; {:.1} ms before the run, {:.1} after); pipeline {:.2} frames/s = {:.2}x model",
            before.0 .0,
            after.0 .0,
            report.fps_out,
            report.fps_out / model_fps
        );
        if let Some((a, b)) = thirds {
            println!(
                "end to end, first third of the run: p50 {:.1} p99 {:.1} ms; last third: p50 {:.1} p99 {:.1} ms",
                a.p50, a.p99, b.p50, b.p99
            );
        }
        if let Some((ms, fps)) = batched {
            println!(
                "model only at the pipeline's batch {batch}: {ms:.1} ms/frame ({fps:.2} frames/s); pipeline = {:.2}x that",
                report.fps_out / fps
            );
        }
        if !targets.is_empty() {
            println!("targets (live, {}):", report.show.unwrap_or("?"));
            for t in &targets {
                let value = t.value.map_or("-".to_string(), |v| format!("{v:.3}"));
                let verdict = match t.pass {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "",
                };
                println!("  {:<48} {:>10}   bar {:<28} {verdict}", t.name, value, t.bar);
            }
        }
    }
    if let Some(e) = &report.input_error {
        bail!("the input failed: {e}");
    }
    Ok(())
}
